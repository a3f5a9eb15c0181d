"""Firehose frame builders for tests and benchmarks.

`MiniRepo` keeps a small repository (records, a real MST built with protocol.mst, signed commits
with protocol.commit) and returns, for each commit, the pieces a `#commit` message carries: the
commit CID, the CAR slice (commit block, MST nodes, new record blocks) and the ops. The `*_frame`
functions wrap those (and the other message types) into binary frames exactly as a relay sends
them: DAG-CBOR header + DAG-CBOR body. `write_capture` writes frames in the capture file format.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.car import write_car
from protocol.cid import cid_for_cbor, cid_to_str
from protocol.commit import encode_commit, sign_commit
from protocol.crypto import PrivateKey
from protocol.data_model import Link, encode_dag_cbor, json_to_dag_cbor
from protocol.mst import build_mst
from protocol.syntax import tid_from_micros

BASE_MICROS = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DEFAULT_TIME = "2026-01-01T00:00:00.000Z"


@dataclass
class CommitParts:
    did: str
    rev: str
    since: str | None
    commit_cid: bytes
    car: bytes
    ops: list[dict[str, Any]]  # {action, path, cid: Link | None}
    commit_block: bytes
    blocks: dict[bytes, bytes] = field(default_factory=dict)


class MiniRepo:
    """A repository with real MST and signed commits (small: the whole tree goes in each diff)."""

    def __init__(self, did: str, key: PrivateKey | None = None, *, clock_start: int = BASE_MICROS):
        self.did = did
        self.key = key or PrivateKey.generate("k256")
        self.records: dict[str, tuple[bytes, bytes]] = {}  # path -> (cid, block)
        self.rev: str | None = None
        self._micros = clock_start

    def next_tid(self) -> str:
        self._micros += 1000
        return tid_from_micros(self._micros)

    def commit(
        self,
        writes: list[tuple[str, str, str, dict[str, Any] | None]],
        *,
        key: PrivateKey | None = None,
        include_records: bool = True,
    ) -> CommitParts:
        """Apply (action, collection, rkey, record) writes and sign a commit (with `key` if given,
        e.g. a wrong key for bad-signature tests)."""
        ops: list[dict[str, Any]] = []
        new_blocks: dict[bytes, bytes] = {}
        for action, collection, rkey, record in writes:
            path = f"{collection}/{rkey}"
            if action == "delete":
                self.records.pop(path, None)
                ops.append({"action": "delete", "path": path, "cid": None})
                continue
            assert record is not None
            block = json_to_dag_cbor(record)
            cid = cid_for_cbor(block)
            self.records[path] = (cid, block)
            new_blocks[cid] = block
            ops.append({"action": action, "path": path, "cid": Link(cid)})
        root, mst_blocks = build_mst((p, c) for p, (c, _b) in sorted(self.records.items()))
        since = self.rev
        rev = self.next_tid()
        commit = sign_commit(did=self.did, data=root, rev=rev, key=key or self.key)
        commit_block = encode_commit(commit)
        commit_cid = cid_for_cbor(commit_block)
        blocks: dict[bytes, bytes] = {commit_cid: commit_block}
        blocks.update(mst_blocks)
        if include_records:
            blocks.update(new_blocks)
        self.rev = rev
        return CommitParts(
            did=self.did, rev=rev, since=since, commit_cid=commit_cid,
            car=write_car([commit_cid], blocks.items()), ops=ops, commit_block=commit_block,
            blocks=blocks,
        )  # fmt: skip


def frame(header: dict[str, Any], body: dict[str, Any]) -> bytes:
    return encode_dag_cbor(header) + encode_dag_cbor(body)


def commit_frame(
    seq: int,
    parts: CommitParts,
    *,
    time: str = DEFAULT_TIME,
    too_big: bool = False,
    since: Any = "parts",
    car: bytes | None = None,
    repo: str | None = None,
    rev: str | None = None,
) -> bytes:
    body = {
        "seq": seq,
        "rebase": False,
        "tooBig": too_big,
        "repo": repo or parts.did,
        "commit": Link(parts.commit_cid),
        "rev": rev or parts.rev,
        "since": parts.since if since == "parts" else since,
        "blocks": parts.car if car is None else car,
        "ops": parts.ops,
        "blobs": [],
        "time": time,
    }
    return frame({"op": 1, "t": "#commit"}, body)


def identity_frame(
    seq: int, did: str, handle: str | None = None, *, time: str = DEFAULT_TIME
) -> bytes:
    body: dict[str, Any] = {"seq": seq, "did": did, "time": time}
    if handle is not None:
        body["handle"] = handle
    return frame({"op": 1, "t": "#identity"}, body)


def account_frame(
    seq: int, did: str, active: bool, status: str | None = None, *, time: str = DEFAULT_TIME
) -> bytes:
    body: dict[str, Any] = {"seq": seq, "did": did, "time": time, "active": active}
    if status is not None:
        body["status"] = status
    return frame({"op": 1, "t": "#account"}, body)


def sync_frame(seq: int, parts: CommitParts, *, time: str = DEFAULT_TIME) -> bytes:
    car = write_car([parts.commit_cid], [(parts.commit_cid, parts.commit_block)])
    body = {"seq": seq, "did": parts.did, "blocks": car, "rev": parts.rev, "time": time}
    return frame({"op": 1, "t": "#sync"}, body)


def info_frame(name: str, message: str | None = None) -> bytes:
    body: dict[str, Any] = {"name": name}
    if message is not None:
        body["message"] = message
    return frame({"op": 1, "t": "#info"}, body)


def error_frame(error: str, message: str | None = None) -> bytes:
    body: dict[str, Any] = {"error": error}
    if message is not None:
        body["message"] = message
    return frame({"op": -1}, body)


def capture_bytes(frames: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(f)) + f for f in frames)


def write_capture(path: Path, frames: list[bytes]) -> Path:
    """Write frames in the capture format (zstd when the name ends in .zst)."""
    data = capture_bytes(frames)
    if path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor(level=3).compress(data)
    path.write_bytes(data)
    return path


# ---- records shaped like plyr's ------------------------------------------------------------

STRONG_CID = cid_to_str(cid_for_cbor(b"\xa0"))


def track_record(
    title: str = "Song", *, created_at: str = DEFAULT_TIME, **extra: Any
) -> dict[str, Any]:
    return {
        "$type": "fm.plyr.track",
        "title": title,
        "artist": "Artist",
        "fileType": "mp3",
        "audioUrl": "https://cdn.example.com/a.mp3",
        "createdAt": created_at,
        **extra,
    }


def like_record(subject_uri: str, *, created_at: str = DEFAULT_TIME) -> dict[str, Any]:
    return {
        "$type": "fm.plyr.like",
        "subject": {"uri": subject_uri, "cid": STRONG_CID},
        "createdAt": created_at,
    }


def comment_record(subject_uri: str, text: str = "nice", ts: int = 1000) -> dict[str, Any]:
    return {
        "$type": "fm.plyr.comment",
        "subject": {"uri": subject_uri, "cid": STRONG_CID},
        "text": text,
        "timestampMs": ts,
        "createdAt": DEFAULT_TIME,
    }


def list_record(items: list[str], name: str = "Mix") -> dict[str, Any]:
    return {
        "$type": "fm.plyr.list",
        "name": name,
        "listType": "playlist",
        "items": [{"subject": {"uri": u, "cid": STRONG_CID}} for u in items],
        "createdAt": DEFAULT_TIME,
    }


def profile_record(bio: str = "hi") -> dict[str, Any]:
    return {"$type": "fm.plyr.actor.profile", "bio": bio, "createdAt": DEFAULT_TIME}


def post_record(text: str) -> dict[str, Any]:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": DEFAULT_TIME, "langs": ["en"]}
