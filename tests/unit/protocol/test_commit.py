"""Signed commits, and the repo builder's commits and diff CARs."""

from __future__ import annotations

import random

import libipld
import pytest

from protocol.car import read_car
from protocol.cid import cid_for_cbor, verify_block
from protocol.commit import (
    Commit,
    CommitError,
    encode_commit,
    parse_commit,
    sign_commit,
    unsigned_bytes,
    unsigned_bytes_from_block,
    verify_commit_signature,
)
from protocol.crypto import PrivateKey
from protocol.data_model import Link, encode_dag_cbor_exact
from protocol.mst import MissingBlock, MstError, invert_ops, lookup, walk
from tests.support.repo_builder import RepoBuilder, TidClock, tid_from_micros

ROOT = cid_for_cbor(b"\xa0")


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_sign_parse_verify_round_trip(curve: str) -> None:
    key = PrivateKey.generate(curve)
    commit = sign_commit(did="did:plc:abc", data=ROOT, rev="3kabcdefghij2", key=key)
    block = encode_commit(commit)
    parsed = parse_commit(block)
    assert parsed == commit
    assert parsed.version == 3 and parsed.prev is None and len(parsed.sig) == 64
    assert unsigned_bytes(parsed) == unsigned_bytes_from_block(block)
    assert verify_commit_signature(block, key.public_key())
    assert not verify_commit_signature(block, PrivateKey.generate(curve).public_key())
    # The block decodes as the spec's shape, with links as links.
    decoded = libipld.decode_dag_cbor(block)
    assert set(decoded) == {"did", "version", "data", "rev", "prev", "sig"}
    assert b"\xd8\x2a" in block and decoded["data"] == ROOT


def test_tampered_commit_fails_verification() -> None:
    key = PrivateKey.generate("k256")
    commit = sign_commit(did="did:plc:abc", data=ROOT, rev="3kabcdefghij2", key=key)
    other = Commit(commit.did, 3, cid_for_cbor(b"\x80"), commit.rev, None, commit.sig)
    assert not verify_commit_signature(encode_commit(other), key.public_key())
    assert not verify_commit_signature(b"\xa0", key.public_key())
    assert not verify_commit_signature(b"garbage", key.public_key())


def test_signature_checked_over_received_bytes_with_unknown_fields() -> None:
    """An extra field the signer included must be part of what we verify."""
    key = PrivateKey.generate("p256")
    unsigned = {
        "did": "did:plc:abc",
        "version": 3,
        "data": Link(ROOT),
        "rev": "3kabcdefghij2",
        "prev": None,
        "zzextra": b"\x01\x71\x12\x20" + b"\x00" * 32,  # bytes that look like a CID
    }
    sig = key.sign(encode_dag_cbor_exact(unsigned))
    block = encode_dag_cbor_exact({**unsigned, "sig": sig})
    assert verify_commit_signature(block, key.public_key())
    # Dropping the field (what a decode/re-encode through the dataclass does) breaks it.
    assert not key.public_key().verify(unsigned_bytes(parse_commit(block)), sig)


def test_sig_that_looks_like_a_cid_is_encoded_as_bytes() -> None:
    fake_sig = b"\x01\x71\x12\x20" + bytes(range(60))  # libipld would write this as a link
    commit = Commit("did:plc:abc", 3, ROOT, "3kabcdefghij2", None, fake_sig)
    block = encode_commit(commit)
    assert parse_commit(block).sig == fake_sig
    assert b"\x58\x40\x01\x71\x12\x20" in block  # major type 2, 64 bytes


@pytest.mark.parametrize(
    "obj, match",
    [
        ([1, 2], "not a map"),
        ({"did": "did:plc:a", "version": 4}, "version"),
        ({"did": "did:plc:a", "version": True}, "version"),
        ({"did": "nope", "version": 3}, "did"),
        ({"did": "did:plc:a", "version": 3, "data": b"xx"}, "data"),
        ({"did": "did:plc:a", "version": 3, "data": ROOT, "prev": None, "sig": b"s"}, "rev"),
        ({"did": "did:plc:a", "version": 3, "data": ROOT, "rev": "r", "sig": b"s"}, "prev"),
        (
            {"did": "did:plc:a", "version": 3, "data": ROOT, "rev": "r", "prev": b"x", "sig": b""},
            "prev",
        ),
        ({"did": "did:plc:a", "version": 3, "data": ROOT, "rev": "r", "prev": None}, "sig"),
    ],
)
def test_parse_commit_rejects_bad_shapes(obj: object, match: str) -> None:
    with pytest.raises(CommitError, match=match):
        parse_commit(libipld.encode_dag_cbor(obj))


def test_parse_commit_rejects_non_cbor_and_accepts_v2() -> None:
    with pytest.raises(CommitError):
        parse_commit(b"\xa1")
    v2 = encode_dag_cbor_exact(
        {"did": "did:plc:a", "version": 2, "data": Link(ROOT), "prev": None, "sig": b"\x00" * 64}
    )
    parsed = parse_commit(v2)
    assert parsed.version == 2 and parsed.rev == ""
    assert unsigned_bytes(parsed) == unsigned_bytes_from_block(v2)


def test_tids_are_monotonic_and_well_formed() -> None:
    clock = TidClock(clock_id=7)
    tids = [clock.next() for _ in range(2000)]
    assert tids == sorted(tids) and len(set(tids)) == len(tids)
    assert all(len(t) == 13 and t[0] in "234567abcdefghij" for t in tids)
    assert tid_from_micros(0) == "2222222222222"


# ---------------------------------------------------------------- repo builder


def _diff_get(blocks: dict[bytes, bytes]):
    return blocks.get


def test_builder_commits_verify_and_prove_their_ops() -> None:
    key = PrivateKey.generate("k256")
    rb = RepoBuilder("did:plc:builder", key)
    for i in range(200):
        rb.put("app.bsky.feed.post", f"3kpost{i:07d}", {"$type": "app.bsky.feed.post", "i": i})
    first = rb.commit()
    assert first.since is None and first.prev_data is None
    assert [op.action for op in first.ops] == ["create"] * 200

    track = {"$type": "fm.plyr.track", "title": "t", "audio": {"$bytes": "AAEC"}}
    rb.put("fm.plyr.track", "3ktrack000001", track)
    rb.put("app.bsky.feed.post", "3kpost0000005", {"$type": "app.bsky.feed.post", "i": -5})
    rb.delete("app.bsky.feed.post", "3kpost0000007")
    rb.delete("app.bsky.feed.post", "3knotthere")  # no-op
    second = rb.commit()
    assert second.since == first.rev and second.rev > first.rev
    assert second.prev_data == first.data
    assert [(op.action, op.path) for op in second.ops] == [
        ("create", "fm.plyr.track/3ktrack000001"),
        ("update", "app.bsky.feed.post/3kpost0000005"),
        ("delete", "app.bsky.feed.post/3kpost0000007"),
    ]
    assert second.ops[1].prev is not None and second.ops[2].cid is None

    car = read_car(second.car_bytes)  # verifies every block's hash
    assert car.roots == [second.commit_cid]
    assert car.blocks == second.blocks
    commit_block = car.blocks[second.commit_cid]
    assert verify_commit_signature(commit_block, key.public_key())
    commit = parse_commit(commit_block)
    assert commit.data == second.data and commit.rev == second.rev
    # The diff alone proves every op: created/updated records resolve to their CIDs, the
    # deleted one resolves to nothing, without needing any block outside the diff.
    for op in second.ops:
        path = op.path
        assert lookup(commit.data, car.blocks.get, path) == op.cid
        if op.cid is not None:
            assert verify_block(op.cid, car.blocks[op.cid])
    # The old value of the updated record is not in the diff, and the diff is small.
    assert second.ops[1].prev not in car.blocks
    assert len(car.blocks) < 20
    # But walking the whole tree needs blocks the diff does not carry.
    with pytest.raises(MissingBlock):
        list(walk(commit.data, car.blocks.get))


def test_builder_full_car_is_complete_and_pre_ordered() -> None:
    key = PrivateKey.generate("p256")
    rb = RepoBuilder("did:plc:full", key)
    expected = {}
    for i in range(500):
        coll = ["app.bsky.feed.like", "fm.plyr.like", "fm.plyr.track"][i % 3]
        rkey = f"3k{i * 7919 % 100000:011d}"
        expected[f"{coll}/{rkey}"] = rb.put(coll, rkey, {"$type": coll, "i": i})
    rb.commit()
    data = rb.full_car()
    car = read_car(data)
    commit = parse_commit(car.blocks[car.roots[0]])
    assert dict(walk(commit.data, car.blocks.get)) == expected
    # Streamable order: commit first, then the MST root, and every node before its children.
    order = list(libipld.decode_car(data)[1])
    assert order[0] == car.roots[0] and order[1] == commit.data
    seen: set[bytes] = set()
    for cid in order[1:]:
        node = libipld.decode_dag_cbor(car.blocks[cid])
        if isinstance(node, dict) and "e" in node:
            assert cid == commit.data or cid in seen, "node appeared before its parent"
            for link in [node["l"]] + [e["t"] for e in node["e"]] + [e["v"] for e in node["e"]]:
                if link is not None:
                    seen.add(link)
    assert rb.get("fm.plyr.like", "3k00000007919") is not None
    assert rb.get("fm.plyr.like", "missing") is None


def test_builder_firehose_frame_shape() -> None:
    rb = RepoBuilder("did:plc:frame", PrivateKey.generate("k256"))
    rb.put("fm.plyr.like", "3klike0000001", {"$type": "fm.plyr.like", "n": 1})
    rb.commit()
    rb.put("fm.plyr.like", "3klike0000002", {"$type": "fm.plyr.like", "n": 2})
    result = rb.commit()
    header, body = libipld.decode_dag_cbor_multi(result.firehose_frame(seq=42))
    assert header == {"op": 1, "t": "#commit"}
    assert body["seq"] == 42 and body["repo"] == "did:plc:frame"
    assert body["commit"] == result.commit_cid and body["blocks"] == result.car_bytes
    assert body["prevData"] == result.prev_data and body["since"] == result.since
    assert body["ops"] == [
        {"action": "create", "path": "fm.plyr.like/3klike0000002", "cid": result.ops[0].cid}
    ]
    assert body["tooBig"] is False and body["blobs"] == []


def test_builder_diffs_invert_to_prev_data() -> None:
    """Every diff CAR carries enough of the tree to undo its ops (sync spec inversion)."""
    rng = random.Random(11)
    rb = RepoBuilder("did:plc:inv", PrivateKey.generate("k256"))
    paths: set[str] = set()
    for step in range(300):
        for _ in range(rng.choice([1, 1, 2, 3, 10, 40]) if step else 200):
            r = rng.random()
            if paths and r < 0.25:
                path = rng.choice(sorted(paths))
                paths.discard(path)
                rb.delete(*path.split("/"))
            elif paths and r < 0.45:
                rb.put(*rng.choice(sorted(paths)).split("/"), {"v": str(rng.random())})
            else:
                coll = rng.choice(["fm.plyr.like", "app.bsky.feed.post", "fm.plyr.track"])
                rkey = f"3k{rng.randrange(10**6):07d}"
                paths.add(f"{coll}/{rkey}")
                rb.put(coll, rkey, {"v": step})
        res = rb.commit()
        if res.prev_data is None:
            continue
        car = read_car(res.car_bytes)
        assert invert_ops(res.data, car.blocks.get, res.ops) == res.prev_data, step
        if len(res.ops) > 1:
            # A commit whose op list was tampered with (one op dropped) does not invert.
            try:
                tampered = invert_ops(res.data, car.blocks.get, res.ops[1:])
            except (MstError, MissingBlock):
                continue
            assert tampered != res.prev_data
