"""Decoding firehose frames, filter first.

A `com.atproto.sync.subscribeRepos` message is two concatenated DAG-CBOR objects: a header
`{op, t}` and a body. `FrameDecoder.decode` decodes both with libipld (one call) and returns:

- None for the overwhelming majority of frames: a `#commit` without `fm.plyr.*` or network play
  (teal.fm, indexer/network_plays.py) ops from a repo we do not index. Only `last_seq` / `last_time` move. This path is the hot loop of the
  indexer (hundreds of thousands of frames/s), so it does the least work possible: no CAR
  parsing, no allocation beyond libipld's own.
- a `CommitEvent` for commits carrying such ops (only those ops are kept; the CAR bytes
  are read later, by the verifier) or for any commit of a repo in `watched` (to follow its rev
  chain: a `since` that skips a rev means we missed something);
- `IdentityEvent`, `AccountEvent`, `SyncEvent`, `InfoEvent`, `ErrorFrame` for the other types;
- `BadFrame` for anything undecodable or misshapen, `Duplicate` for a seq not above the last
  one. Decoding never raises: a bad frame is counted and logged, the stream goes on.

`JetstreamDecoder` turns Jetstream's JSON messages into the same events (its commits carry
ready-made `RecordOp`s; Jetstream gives no signatures to check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import libipld
import orjson

from indexer.network_plays import NETWORK_PLAY_COLLECTIONS, PATH_PREFIXES
from indexer.records import PREFIX, RecordOp

_decode_multi = libipld.decode_dag_cbor_multi
# Op paths the index stores: every fm.plyr.* collection, and the network plays' two collections
# (indexer/network_plays.py). The hot loop tests "fm." first: almost every op fails that one
# short test, as cheap as the single-prefix test before network plays (docs/BENCHMARKS.md).
FM = "fm."
WANTED_PATHS = (PREFIX, *PATH_PREFIXES)
BIGINT_MAX = 2**63 - 1  # cursors are stored as Postgres bigint
MAX_TIME_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z: the last instant datetime holds


@dataclass(slots=True)
class CommitEvent:
    seq: int
    repo: str
    rev: str
    since: str | None
    time: str | None
    commit: bytes | None  # binary CID of the commit block
    blocks: bytes  # the CAR slice, unread
    ops: list[dict[str, Any]]  # only the ops we store (WANTED_PATHS): {action, path, cid}
    too_big: bool
    frame: bytes  # the raw message, for dead letters
    # Jetstream commits arrive as records already (nothing to verify).
    records: list[RecordOp] | None = None
    prev_data: bytes | None = None  # `prevData`: MST root of the previous commit (sync 1.1)
    all_ops: list[dict[str, Any]] | None = None  # every op of the message, for MST inversion


@dataclass(slots=True)
class IdentityEvent:
    seq: int
    did: str
    time: str | None
    handle: str | None


@dataclass(slots=True)
class AccountEvent:
    seq: int
    did: str
    time: str | None
    active: bool
    status: str | None


@dataclass(slots=True)
class SyncEvent:
    seq: int
    did: str
    rev: str | None
    time: str | None
    blocks: bytes = b""  # CAR slice holding the signed commit (checked before it is trusted)


@dataclass(slots=True)
class InfoEvent:
    name: str
    message: str | None


@dataclass(slots=True)
class ErrorFrame:
    error: str
    message: str | None


@dataclass(slots=True)
class BadFrame:
    reason: str
    seq: int | None = None
    frame: bytes = field(default=b"", repr=False)


@dataclass(slots=True)
class Duplicate:
    seq: int


Event = (
    CommitEvent | IdentityEvent | AccountEvent | SyncEvent | InfoEvent | ErrorFrame | BadFrame | Duplicate
)


class FrameDecoder:
    """Stateful decoder: remembers the last seq (to drop replays) and the repos to watch.

    `watched` maps DIDs we index to their newest known rev; commits of those repos come back
    as events even without plyr ops. `last_seq` starts at the resume cursor: frames at or
    below it are `Duplicate`s.
    """

    __slots__ = ("last_seq", "last_time", "watched", "frames")

    def __init__(self, last_seq: int | None = None, watched: dict[str, str | None] | None = None):
        self.last_seq: int = last_seq if last_seq is not None else -1
        self.last_time: str | None = None
        self.watched: dict[str, str | None] = watched if watched is not None else {}
        self.frames = 0

    def decode(self, frame: bytes) -> Event | None:
        self.frames += 1
        try:
            header, body = _decode_multi(frame)
        except (ValueError, TypeError):
            return _undecodable(frame)
        try:
            t = header.get("t")
            if t == "#commit":
                seq = body["seq"]
                if type(seq) is not int or not 0 <= seq <= BIGINT_MAX:
                    return BadFrame(f"commit frame with an invalid seq {seq!r:.40}", None, frame)
                if seq <= self.last_seq:
                    return Duplicate(seq)
                self.last_seq = seq
                self.last_time = body["time"]
                matched: list[dict[str, Any]] | None = None
                for op in body["ops"]:
                    path = op["path"]
                    if path.startswith(FM) and path.startswith(WANTED_PATHS):
                        if matched is None:
                            matched = []
                        matched.append(op)
                repo = body["repo"]
                if matched is None and repo not in self.watched:
                    return None
                return _commit_event(seq, body, matched or [], frame)
            if header.get("op") == -1:
                return ErrorFrame(_text(body.get("error")) or "?", _text(body.get("message")))
            if t == "#info":
                return InfoEvent(_text(body.get("name")) or "?", _text(body.get("message")))
            seq = body["seq"]
            if type(seq) is not int or not 0 <= seq <= BIGINT_MAX:
                return BadFrame(f"{t!r:.40} frame with an invalid seq {seq!r:.40}", None, frame)
            if seq <= self.last_seq:
                return Duplicate(seq)
            self.last_seq = seq
            time = body.get("time")
            self.last_time = time
            did = body["did"]
            if not isinstance(did, str) or not (time is None or isinstance(time, str)):
                return BadFrame(f"{t!r:.40} frame with a non-string did or time", seq, frame)
            if t == "#identity":
                handle = body.get("handle")
                if handle is not None and not isinstance(handle, str):
                    return BadFrame("identity handle is not a string", seq, frame)
                return IdentityEvent(seq, did, time, handle)
            if t == "#account":
                active, status = body["active"], body.get("status")
                if type(active) is not bool or not (status is None or isinstance(status, str)):
                    return BadFrame("account active/status of the wrong type", seq, frame)
                return AccountEvent(seq, did, time, active, status)
            if t == "#sync":
                rev, blocks = body.get("rev"), body.get("blocks")
                if rev is not None and not isinstance(rev, str):
                    return BadFrame("sync rev is not a string", seq, frame)
                if blocks is not None and not isinstance(blocks, bytes):
                    return BadFrame("sync blocks are not bytes", seq, frame)
                return SyncEvent(seq, did, rev, time, blocks or b"")
            return BadFrame(f"unknown message type {t!r:.40}", seq, frame)
        except (KeyError, TypeError, AttributeError) as exc:
            seq = body.get("seq") if isinstance(body, dict) else None
            kind = header.get("t") if isinstance(header, dict) else "?"
            return BadFrame(
                f"misshapen {kind!r:.40} frame: {exc!r:.200}",
                seq if type(seq) is int else None,
                frame,
            )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _commit_event(seq: int, body: dict[str, Any], ops: list[dict[str, Any]], frame: bytes) -> Event:
    """The event for a commit we care about, with every field the consumer uses type-checked
    (this path is rare, so it can afford the checks the hot path skips)."""
    repo, rev, since, time = body["repo"], body["rev"], body.get("since"), body.get("time")
    commit, blocks, too_big = body.get("commit"), body.get("blocks"), body.get("tooBig", False)
    prev_data = body.get("prevData")
    if not (
        isinstance(repo, str)
        and isinstance(rev, str)
        and (since is None or isinstance(since, str))
        and (time is None or isinstance(time, str))
        and (commit is None or isinstance(commit, bytes))
        and (blocks is None or isinstance(blocks, bytes))
        and type(too_big) is bool
        and (prev_data is None or isinstance(prev_data, bytes))
    ):
        return BadFrame("commit fields of the wrong type", seq, frame)
    for op in ops:
        if not isinstance(op, dict):
            return BadFrame("commit op is not a map", seq, frame)
    return CommitEvent(
        seq, repo, rev, since, time, commit, blocks or b"", ops, too_big, frame,
        prev_data=prev_data, all_ops=body["ops"],
    )  # fmt: skip


def _undecodable(frame: bytes) -> BadFrame:
    try:
        parts = _decode_multi(frame)
    except (ValueError, TypeError) as exc:
        return BadFrame(f"undecodable frame ({len(frame)} bytes): {exc}", None, bytes(frame))
    return BadFrame(f"frame has {len(parts)} CBOR objects, expected 2", None, frame)


class JetstreamDecoder:
    """Jetstream JSON messages -> events. The cursor is `time_us` (used as the seq)."""

    __slots__ = ("last_seq", "last_time", "watched", "frames")

    def __init__(self, last_seq: int | None = None, watched: dict[str, str | None] | None = None):
        self.last_seq: int = last_seq if last_seq is not None else -1
        self.last_time: str | None = None
        self.watched: dict[str, str | None] = watched if watched is not None else {}
        self.frames = 0

    def decode(self, message: bytes | str) -> Event | None:
        self.frames += 1
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            raw = message.encode() if isinstance(message, str) else message
            return BadFrame(f"invalid JSON: {exc}", None, raw)
        try:
            seq = msg["time_us"]
            did = msg["did"]
            kind = msg["kind"]
            if type(seq) is not int or not 0 <= seq <= MAX_TIME_US or not isinstance(did, str):
                return BadFrame("Jetstream message with an invalid time_us or did", None)
            # Jetstream may repeat events around a reconnect (we rewind the cursor a little);
            # the rev rules make re-applying harmless, so only the cursor bookkeeping moves.
            if seq > self.last_seq:
                self.last_seq = seq
            self.last_time = _iso_from_micros(seq)
            if kind == "commit":
                c = msg["commit"]
                collection = c["collection"]
                if not (collection.startswith(PREFIX) or collection in NETWORK_PLAY_COLLECTIONS):
                    return None
                action = c["operation"]
                record, cid = c.get("record"), c.get("cid")
                if not all(isinstance(c.get(k), str) for k in ("rev", "rkey", "operation")) or not (
                    (record is None or isinstance(record, dict)) and (cid is None or isinstance(cid, str))
                ):
                    return BadFrame("Jetstream commit fields of the wrong type", seq)
                op = RecordOp(
                    action=action, did=did, collection=collection, rkey=c["rkey"], rev=c["rev"],
                    cid=cid, record=record if action != "delete" else None, seq=seq,
                )  # fmt: skip
                return CommitEvent(
                    seq, did, c["rev"], None, self.last_time, None, b"", [], False, b"", [op]
                )
            if kind == "identity":
                ident = msg.get("identity") or {}
                return IdentityEvent(seq, did, self.last_time, _text(ident.get("handle")))
            if kind == "account":
                acct = msg["account"]
                if type(acct["active"]) is not bool:
                    return BadFrame("Jetstream account.active is not a boolean", seq)
                return AccountEvent(seq, did, self.last_time, acct["active"], _text(acct.get("status")))
            return BadFrame(f"unknown Jetstream kind {kind!r}", seq)
        except (KeyError, TypeError, AttributeError) as exc:
            raw = message.encode() if isinstance(message, str) else message
            return BadFrame(f"misshapen Jetstream message: {exc!r}", None, raw)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso_from_micros(us: int) -> str:
    # Integer arithmetic: a float division rounds the last microseconds of year 9999 over.
    return (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")
