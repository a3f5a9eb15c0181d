"""Seeds, mutators and the checked properties of the frame-decoding fuzz targets.

Shared by the bounded hypothesis run in tests/unit/indexer/test_frames_fuzz.py and the long
session of tests/fuzz/fuzz_frames.py. The targets:

- `check_decode(frame)`: `FrameDecoder.decode` never raises and returns None or one of the
  event types, with the field types the consumer relies on (a `seq` that fits the bigint
  cursor column, a `rev` string it compares, bytes where it slices, ...);
- `check_verify(event)`: for the commit events it returns, `Verifier.commit_ops` (signatures
  off, CIDs on) raises nothing but `VerifyError`, and returns typed `RecordOp`s.

Found cases live in tests/fuzz/corpus/ (one raw frame per `*.bin` file, named after what it
found) and are replayed by the unit tests and by the consumer crash tests.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import libipld

from indexer.frames import (
    AccountEvent,
    BadFrame,
    CommitEvent,
    Duplicate,
    ErrorFrame,
    FrameDecoder,
    IdentityEvent,
    InfoEvent,
    SyncEvent,
)
from indexer.records import RecordOp
from indexer.verify import Verifier, VerifyError
from protocol.car import write_car
from protocol.crypto import PrivateKey
from tests.support.frames import (
    MiniRepo,
    account_frame,
    comment_record,
    commit_frame,
    error_frame,
    frame,
    identity_frame,
    info_frame,
    like_record,
    post_record,
    sync_frame,
    track_record,
)

CORPUS = Path(__file__).resolve().parent / "corpus"
DID = "did:plc:fuzzfuzzfuzzfuzzfuzzfuzz"
BIGINT_MAX = 2**63 - 1
EVENT_TYPES = (
    CommitEvent,
    IdentityEvent,
    AccountEvent,
    SyncEvent,
    InfoEvent,
    ErrorFrame,
    BadFrame,
    Duplicate,
)


def _seed_repo() -> tuple[MiniRepo, list[Any]]:
    # A fixed key: the seeds (and corpus files made from them) are the same on every run.
    repo = MiniRepo(DID, PrivateKey.from_bytes(bytes(range(1, 33)), "k256"))
    track_uri = f"at://{DID}/fm.plyr.track/3kt1"
    commits = [
        repo.commit([("create", "fm.plyr.track", "3kt1", track_record("Seed"))]),
        repo.commit(
            [
                ("create", "fm.plyr.like", "3kl1", like_record(track_uri)),
                ("create", "fm.plyr.comment", "3kc1", comment_record(track_uri)),
                ("create", "app.bsky.feed.post", "3kp1", post_record("mixed")),
            ]
        ),
        repo.commit(
            [
                ("update", "fm.plyr.track", "3kt1", track_record("Seed 2")),
                ("delete", "fm.plyr.like", "3kl1", None),
            ]
        ),
        repo.commit([("create", "app.bsky.feed.post", "3kp2", post_record("not ours"))]),
    ]
    return repo, commits


_REPO, _COMMITS = _seed_repo()


def seed_frames() -> list[bytes]:
    """Valid frames of every message type, seqs 1..n."""
    frames = [commit_frame(i + 1, c) for i, c in enumerate(_COMMITS)]
    n = len(frames)
    frames += [
        identity_frame(n + 1, DID, "fuzz.test"),
        account_frame(n + 2, DID, False, "deactivated"),
        account_frame(n + 3, DID, True),
        sync_frame(n + 4, _COMMITS[-1]),
        info_frame("OutdatedCursor", "old"),
        error_frame("FutureCursor", "future"),
    ]
    return frames


def seed_bodies() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The seeds as (header, body) IPLD values, for structural mutations."""
    out = []
    for f in seed_frames():
        header, body = libipld.decode_dag_cbor_multi(f)
        out.append((header, body))
    return out


def commit_parts() -> list[Any]:
    return list(_COMMITS)


# ---- mutators (plain random, so the long session can run without hypothesis too) ----------------

WEIRD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    float("inf"),
    2**63,
    2**64 - 1,
    -(2**63),
    -(2**64),
    "",
    "x" * 3,
    "fm.plyr.track/3kt1",
    "fm.plyr.track",
    "fm.plyr.track/a/b",
    "fm.plyr.",
    "\x00",
    b"",
    b"\x00" * 36,
    [],
    [1],
    {},
    {"a": 1},
    [{}],
    [{"path": 1}],
    [{"action": "create", "path": "fm.plyr.track/x", "cid": None}],
]


def flip_bits(data: bytes, rnd: random.Random, count: int = 1) -> bytes:
    if not data:
        return data
    buf = bytearray(data)
    for _ in range(count):
        i = rnd.randrange(len(buf))
        buf[i] ^= 1 << rnd.randrange(8)
    return bytes(buf)


def huge_length(rnd: random.Random) -> bytes:
    """A header followed by a CBOR item that claims an absurd length."""
    header = libipld.encode_dag_cbor({"op": 1, "t": "#commit"})
    major = rnd.choice(
        [0x5B, 0x7B, 0x9B, 0xBB, 0x5A, 0x9A]
    )  # bytes/text/array/map with 8/4-byte len
    width = 8 if major & 0x1F == 0x1B else 4
    length = rnd.choice([2**width * 8 - 1, 2**31, 2**32 - 1, 10**9]) % (2 ** (width * 8))
    return header + bytes([major]) + length.to_bytes(width, "big") + b"\x00" * rnd.randrange(8)


def replace_field(header: dict[str, Any], body: dict[str, Any], rnd: random.Random) -> bytes:
    """Re-encode a seed with one field of the header, body or an op replaced by a weird value."""
    header, body = dict(header), dict(body)
    where = rnd.randrange(4)
    value = rnd.choice(WEIRD_VALUES)
    if isinstance(value, float):
        value = 1.5  # DAG-CBOR has no infinities; floats themselves are encodable
    if where == 0:
        header[rnd.choice(["op", "t", "x"])] = value
    elif where == 3 and isinstance(body.get("ops"), list) and body["ops"]:
        ops = [dict(o) for o in body["ops"]]
        op = rnd.choice(ops)
        op[rnd.choice(["action", "path", "cid", "prev"])] = value
        body["ops"] = ops
    elif body:
        key = rnd.choice(
            [
                *body.keys(),
                "seq",
                "repo",
                "rev",
                "since",
                "commit",
                "did",
                "active",
                "handle",
                "time",
            ]
        )
        if rnd.random() < 0.15:
            body.pop(key, None)
        else:
            body[key] = value
    try:
        return libipld.encode_dag_cbor(header) + libipld.encode_dag_cbor(body)
    except (ValueError, TypeError, OverflowError):
        return frame({"op": 1, "t": "#commit"}, {"seq": 1})


def tamper_car(rnd: random.Random, seq: int = 1) -> bytes:
    """A commit frame whose CAR slice lost, gained, or corrupted a block, or whose header lies."""
    parts = rnd.choice(_COMMITS[:3])
    blocks = list(parts.blocks.items())
    kind = rnd.randrange(5)
    roots = [parts.commit_cid]
    if kind == 0 and len(blocks) > 1:
        del blocks[rnd.randrange(len(blocks))]  # a missing block
    elif kind == 1:
        blocks.append((rnd.choice(blocks)[0], b"\xa1ax\x01"))  # an extra block whose CID lies
    elif kind == 2:
        i = rnd.randrange(len(blocks))
        cid, block = blocks[i]
        blocks[i] = (cid, flip_bits(block, rnd))  # tampered bytes
    elif kind == 3:
        roots = []
    car = write_car(roots, blocks)
    if kind == 4:
        car = flip_bits(car, rnd, rnd.randrange(1, 4))
    return commit_frame(seq, parts, car=car)


def mutate(rnd: random.Random) -> bytes:
    """One mutated frame (the long fuzz session's generator)."""
    seeds = seed_frames()
    choice = rnd.randrange(7)
    if choice == 0:
        return flip_bits(rnd.choice(seeds), rnd, rnd.randrange(1, 6))
    if choice == 1:
        f = rnd.choice(seeds)
        return f[: rnd.randrange(len(f))]
    if choice == 2:
        return rnd.randbytes(rnd.randrange(64))
    if choice == 3:
        return huge_length(rnd)
    if choice == 4:
        header, body = rnd.choice(seed_bodies())
        return replace_field(header, body, rnd)
    if choice == 5:
        return tamper_car(rnd)
    a, b = rnd.sample(seeds, 2)
    return a[: rnd.randrange(len(a))] + b[rnd.randrange(len(b)) :]  # a splice


# ---- the properties ----------------------------------------------------------------------------


def _seq_ok(seq: Any) -> bool:
    return type(seq) is int and 0 <= seq <= BIGINT_MAX


def check_event(ev: Any) -> None:
    """AssertionError when the event is not typed the way the consumer uses it."""
    assert ev is None or isinstance(ev, EVENT_TYPES), f"untyped result {type(ev)}"
    if isinstance(ev, CommitEvent):
        assert _seq_ok(ev.seq), f"commit seq is {type(ev.seq).__name__}: {ev.seq!r:.60}"
        assert isinstance(ev.repo, str), f"commit repo is {type(ev.repo).__name__}: {ev.repo!r:.60}"
        assert isinstance(ev.rev, str), f"commit rev is {type(ev.rev).__name__}: {ev.rev!r:.60}"
        assert ev.since is None or isinstance(ev.since, str), (
            f"commit since is {type(ev.since).__name__}: {ev.since!r:.60}"
        )
        assert ev.time is None or isinstance(ev.time, str), (
            f"commit time is {type(ev.time).__name__}: {ev.time!r:.60}"
        )
        assert ev.commit is None or isinstance(ev.commit, bytes), (
            f"commit cid is {type(ev.commit).__name__}: {ev.commit!r:.60}"
        )
        assert isinstance(ev.blocks, bytes), f"commit blocks {type(ev.blocks)}"
        assert isinstance(ev.ops, list) and all(
            isinstance(o, dict) and isinstance(o.get("path"), str) for o in ev.ops
        ), "commit ops"
        assert isinstance(ev.too_big, bool)
    elif isinstance(ev, IdentityEvent | AccountEvent | SyncEvent):
        assert _seq_ok(ev.seq), (
            f"{type(ev).__name__} seq is {type(ev.seq).__name__}: {ev.seq!r:.60}"
        )
        assert isinstance(ev.did, str), (
            f"{type(ev).__name__} did is {type(ev.did).__name__}: {ev.did!r:.60}"
        )
        assert ev.time is None or isinstance(ev.time, str), (
            f"{type(ev).__name__} time is {type(ev.time).__name__}: {ev.time!r:.60}"
        )
        if isinstance(ev, IdentityEvent):
            assert ev.handle is None or isinstance(ev.handle, str), (
                f"identity handle is {type(ev.handle).__name__}: {ev.handle!r:.60}"
            )
        if isinstance(ev, AccountEvent):
            assert isinstance(ev.active, bool)
            assert ev.status is None or isinstance(ev.status, str), (
                f"account status is {type(ev.status).__name__}: {ev.status!r:.60}"
            )
        if isinstance(ev, SyncEvent):
            assert ev.rev is None or isinstance(ev.rev, str), (
                f"sync rev is {type(ev.rev).__name__}: {ev.rev!r:.60}"
            )
    elif isinstance(ev, BadFrame):
        assert isinstance(ev.reason, str) and (ev.seq is None or isinstance(ev.seq, int))
    elif isinstance(ev, Duplicate):
        assert isinstance(ev.seq, int)


def check_decode(frame_bytes: bytes, decoder: FrameDecoder | None = None) -> Any:
    """Decode with a fresh decoder (or the one given); check the result; return it."""
    decoder = decoder or FrameDecoder(watched={DID: None})
    ev = decoder.decode(frame_bytes)  # must not raise
    check_decode_result(ev, decoder)
    return ev


def check_decode_result(ev: Any, decoder: FrameDecoder) -> None:
    check_event(ev)
    assert type(decoder.last_seq) is int and decoder.last_seq <= BIGINT_MAX, (
        f"last_seq is {type(decoder.last_seq).__name__}: {decoder.last_seq!r:.60}"
    )


async def check_verify(ev: Any) -> list[RecordOp] | None:
    """Run the verifier (signatures off) on a commit event: only VerifyError may come out."""
    if not isinstance(ev, CommitEvent) or not ev.ops:
        return None
    try:
        ops = await Verifier(None, verify_signatures=False).commit_ops(ev)
    except VerifyError:
        return None
    for op in ops:
        assert isinstance(op, RecordOp)
        assert all(isinstance(x, str) for x in (op.action, op.did, op.collection, op.rkey, op.rev))
        assert op.action == "delete" or (isinstance(op.record, dict) and isinstance(op.cid, str))
    return ops


# ---- Jetstream JSON ------------------------------------------------------------------------------


def jetstream_seeds() -> list[dict[str, Any]]:
    base = {"did": DID, "time_us": 1_767_225_600_000_000}
    commit = {
        "rev": "3kabcabcabc22", "operation": "create", "collection": "fm.plyr.track", "rkey": "3kt1",
        "record": track_record("Seed"), "cid": "bafyreib2rxk3rh6kzwqjtuqmnfhb7mcq3rnk5tr2sjygb3lmotzqyfv3k4",
    }  # fmt: skip
    return [
        {**base, "kind": "commit", "commit": commit},
        {
            **base,
            "kind": "commit",
            "commit": {**commit, "operation": "delete", "record": None, "cid": None},
        },
        {**base, "kind": "identity", "identity": {"did": DID, "handle": "fuzz.test", "seq": 1}},
        {
            **base,
            "kind": "account",
            "account": {"did": DID, "active": False, "status": "deactivated", "seq": 2},
        },
    ]


BIG_INTS = [2**53 + 1, 253402300799999999, 253402300800000000, 2**62, 2**63 - 1, 2**63, 2**64, -1]


def mutate_jetstream(rnd: random.Random) -> bytes:
    """A Jetstream message with a field (top level or nested) replaced, dropped or added."""
    import json

    msg = json.loads(json.dumps(rnd.choice(jetstream_seeds())))
    target = msg
    nested = [k for k, v in msg.items() if isinstance(v, dict)]
    if nested and rnd.random() < 0.5:
        target = msg[rnd.choice(nested)]
    key = rnd.choice([*target.keys(), "extra"])
    roll = rnd.random()
    if roll < 0.15:
        target.pop(key, None)
    else:
        value = rnd.choice(WEIRD_VALUES + BIG_INTS)
        target[key] = value.hex() if isinstance(value, bytes) else value
    text = json.dumps(msg)
    if rnd.random() < 0.05:
        text = text[: rnd.randrange(len(text))]
    return text.encode()


def check_jetstream(message: bytes) -> Any:
    """JetstreamDecoder.decode never raises and returns a typed event."""
    from indexer.frames import JetstreamDecoder

    decoder = JetstreamDecoder()
    ev = decoder.decode(message)  # must not raise
    check_event(ev)
    assert type(decoder.last_seq) is int and decoder.last_seq <= BIGINT_MAX, (
        f"last_seq is {type(decoder.last_seq).__name__}: {decoder.last_seq!r:.60}"
    )
    if isinstance(ev, CommitEvent):
        assert ev.records is not None
        for op in ev.records:
            assert all(
                isinstance(x, str) for x in (op.action, op.did, op.collection, op.rkey, op.rev)
            ), "jetstream op fields are not strings"
            assert op.record is None or isinstance(op.record, dict), (
                "jetstream record is not an object"
            )
    return ev


def corpus_files(kind: str = "cbor") -> list[Path]:
    """Found inputs: `jetstream-*.bin` are Jetstream JSON messages, the others firehose frames."""
    files = sorted(CORPUS.glob("*.bin"))
    if kind == "all":
        return files
    return [p for p in files if p.name.startswith("jetstream-") == (kind == "jetstream")]


def save_case(data: bytes, name: str) -> Path:
    """Keep a found input (deduplicated by content)."""
    import hashlib

    CORPUS.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:12]
    for existing in CORPUS.glob(f"*-{digest}.bin"):
        return existing
    path = CORPUS / f"{name}-{digest}.bin"
    path.write_bytes(data)
    return path


def capture_record(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data
