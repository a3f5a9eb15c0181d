"""Streamed extraction of verified plyr records from repo CARs (real MST, real signatures)."""

from __future__ import annotations

import libipld
import pytest

from indexer.backfill.car_index import PythonCarIndex
from indexer.backfill.extract import ExtractError, extract_from_bytes, extract_records
from protocol.car import CarError, car_header, car_section
from protocol.cid import cid_for_cbor, cid_to_str
from protocol.crypto import PrivateKey
from tests.support.repo_builder import build_repo, like, mixed_repo, post, tid, track

DID = "did:plc:abcdefghijklmnopqrstuvwx"


@pytest.fixture(scope="module")
def repo():
    return mixed_repo(DID, 3000, plyr_every=30)


def _by_key(snapshot) -> dict[str, str]:
    return {f"{r.collection}/{r.rkey}": r.cid for r in snapshot.records}


@pytest.mark.parametrize("order", ["tree", "shuffled"])
def test_extracts_exactly_the_plyr_records(index_cls, repo, order: str) -> None:
    snap = extract_from_bytes(repo.car(order), DID, repo.key.public_key())
    assert _by_key(snap) == repo.plyr_records()
    assert len(snap.records) == 100
    assert snap.rev == repo.rev
    assert snap.commit_cid == cid_to_str(repo.commit_cid)
    first = snap.records[0]
    assert first.value is not None and first.value["$type"] == "fm.plyr.track"


@pytest.mark.parametrize("chunk", [1, 7, 37, 4096, 100_000])
def test_streaming_in_any_chunk_size_gives_the_same_records(index_cls, repo, chunk: int) -> None:
    data = repo.car()
    index = index_cls(memory_limit=50_000)  # small limit: larger inputs spill to a temp file
    for i in range(0, len(data), chunk):
        index.feed(data[i : i + chunk])
    index.finish()
    assert index.spilled
    snap = extract_records(index, DID, repo.key.public_key())
    index.close()
    assert _by_key(snap) == repo.plyr_records()


def test_the_index_keeps_few_blocks(index_cls, repo) -> None:
    index = index_cls.from_bytes(repo.car())
    if index_cls is PythonCarIndex:
        # nodes + plyr records + commit, not the 2,900 posts
        assert index.indexed_blocks <= len(repo.nodes) + 100 + 1 + 5
    else:
        # the C index files every section
        assert index.indexed_blocks == len(list(repo.sections()))
        assert index.index_memory <= 48 * index.indexed_blocks  # 16-byte slots, load 0.35-0.7


def test_truncated_car_is_an_error(index_cls, repo) -> None:
    data = repo.car()
    for cut in (len(data) - 1, len(data) - 500, 30):
        index = index_cls()
        with pytest.raises(CarError, match="truncated"):
            index.feed(data[:cut])
            index.finish()


def test_tampered_record_is_a_cid_mismatch(index_cls, repo) -> None:
    parts = [car_header([repo.commit_cid])]
    for cid, block in repo.sections():
        if b"fm.plyr.track" in block and b"Track 30" in block:
            block = block.replace(b"Track 30", b"Track 31")
        parts.append(car_section(cid, block))
    with pytest.raises(CarError, match="does not match its CID"):
        extract_from_bytes(b"".join(parts), DID, repo.key.public_key())


def test_bad_signature_and_wrong_did_are_refused(index_cls, repo) -> None:
    other = PrivateKey.generate("p256").public_key()
    with pytest.raises(ExtractError, match="signature"):
        extract_from_bytes(repo.car(), DID, other)
    with pytest.raises(ExtractError, match="not did:plc:zz"):
        extract_from_bytes(repo.car(), "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz", repo.key.public_key())
    # explicit opt-out only
    snap = extract_from_bytes(repo.car(), DID, None, verify_signature=False)
    assert len(snap.records) == 100


def test_missing_record_block_is_an_error(index_cls, repo) -> None:
    wanted = next(c for k, (c, _b) in repo.records.items() if k.startswith("fm.plyr."))
    parts = [car_header([repo.commit_cid])]
    parts += [car_section(c, b) for c, b in repo.sections() if c != wanted]
    with pytest.raises(CarError, match="missing the record block"):
        extract_from_bytes(b"".join(parts), DID, repo.key.public_key())


def test_missing_mst_node_is_an_error(index_cls, repo) -> None:
    parts = [car_header([repo.commit_cid])]
    parts += [car_section(c, b) for c, b in repo.sections() if c != repo.root]
    with pytest.raises(CarError, match="missing MST node"):
        extract_from_bytes(b"".join(parts), DID, repo.key.public_key())


def test_records_without_the_plyr_marker_are_found_by_a_second_pass(index_cls) -> None:
    # A record under an fm.plyr key whose bytes never say "fm.plyr." (invalid, but it must be
    # reported, not silently skipped): the index does not keep it, the rescan finds it.
    odd = {"$type": "com.example.other", "x": 1}
    recs = [("fm.plyr.track", tid(1), track(1)), ("fm.plyr.like", tid(2), odd)]
    recs += [
        ("app.bsky.feed.post", tid(i), post(i, __import__("random").Random(i)))
        for i in range(3, 50)
    ]
    built = build_repo(DID, recs)
    snap = extract_from_bytes(built.car(), DID, built.key.public_key())
    assert _by_key(snap) == built.plyr_records()
    assert {r.value["$type"] for r in snap.records} == {"fm.plyr.track", "com.example.other"}


def test_walk_prunes_subtrees_outside_the_plyr_range(index_cls, repo) -> None:
    index = index_cls.from_bytes(repo.car())
    read: list[bytes] = []
    original = index.get_verified

    def counting(cid: bytes) -> bytes | None:
        read.append(cid)
        return original(cid)

    index.get_verified = counting  # type: ignore[method-assign]
    snap = extract_records(index, DID, repo.key.public_key())
    nodes_read = [c for c in read if c in repo.nodes]
    assert len(snap.records) == 100
    assert len(nodes_read) < len(repo.nodes) / 4  # 1 in 30 keys is plyr, interleaved by TID


def test_empty_repo_and_repo_without_plyr_records(index_cls) -> None:
    empty = build_repo(DID, [])
    assert extract_from_bytes(empty.car(), DID, empty.key.public_key()).records == []
    rng = __import__("random").Random(3)
    bsky = build_repo(DID, [("app.bsky.feed.post", tid(i), post(i, rng)) for i in range(200)])
    assert extract_from_bytes(bsky.car(), DID, bsky.key.public_key()).records == []


def test_likes_and_undecodable_records(index_cls) -> None:
    t = track(1)
    tblock = libipld.encode_dag_cbor(t)
    l_rec = like(f"at://{DID}/fm.plyr.track/{tid(1)}", cid_to_str(cid_for_cbor(tblock)))
    built = build_repo(DID, [("fm.plyr.track", tid(1), t), ("fm.plyr.like", tid(2), l_rec)])
    snap = extract_from_bytes(built.car(), DID, built.key.public_key())
    assert [r.collection for r in snap.records] == ["fm.plyr.like", "fm.plyr.track"]
    assert snap.records[0].value["subject"]["uri"].endswith(tid(1))


@pytest.mark.parametrize("chunk", [5, 4096, 1 << 30])
def test_commit_anywhere_in_the_car_even_after_a_decoy(index_cls, repo, chunk: int) -> None:
    # The commit last, and before it a block that merely contains the commit's CID bytes:
    # the first sighting is a decoy, verification rejects it and the real one is found.
    decoy = libipld.encode_dag_cbor(
        {"$type": "x.decoy", "raw": b"\x07" + repo.commit_cid + b"\x00" * 40}
    )
    body = [s for s in repo.sections() if s[0] != repo.commit_cid]
    parts = [car_header([repo.commit_cid]), car_section(cid_for_cbor(decoy), decoy)]
    parts += [car_section(c, b) for c, b in body]
    parts.append(car_section(repo.commit_cid, repo.commit_block))
    data = b"".join(parts)
    index = index_cls()
    for i in range(0, len(data), chunk):
        index.feed(data[i : i + chunk])
    index.finish()
    snap = extract_records(index, DID, repo.key.public_key())
    assert _by_key(snap) == repo.plyr_records()


def test_a_second_pass_reads_the_spilled_bytes_too(index_cls) -> None:
    # The Python index rescans memory part + spill file as one stream; the C index needs none.
    odd = {"$type": "com.example.other", "x": 1}
    recs = [("fm.plyr.track", tid(1), track(1)), ("fm.plyr.like", tid(2), odd)]
    rng = __import__("random").Random(4)
    recs += [("app.bsky.feed.post", tid(i), post(i, rng)) for i in range(3, 400)]
    built = build_repo(DID, recs)
    data = built.car()
    index = index_cls(memory_limit=5000)
    for i in range(0, len(data), 777):
        index.feed(data[i : i + 777])
    index.finish()
    assert index.spilled
    snap = extract_records(index, DID, built.key.public_key())
    index.close()
    assert _by_key(snap) == built.plyr_records()
