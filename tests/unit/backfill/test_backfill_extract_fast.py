"""The fast framing loop of PythonCarIndex and the fast record decoding, against their careful twins.

`PythonCarIndex.from_bytes` frames almost everything in `_frame_fast` (no bounds checks, the end of
the data found by IndexError); streamed input in small chunks goes mostly through
`_frame_careful`. Both must index the same blocks and detect every truncation exactly.
"""

from __future__ import annotations

import random

import libipld
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.backfill import extract
from indexer.backfill.car_index import PythonCarIndex as CarIndex
from indexer.backfill.extract import extract_from_bytes
from protocol.car import CarError, car_header, car_section, read_car
from protocol.cid import cid_for_cbor
from protocol.data_model import _decode_json_item, block_to_json
from tests.support.repo_builder import build_repo, post, tid, track

DID = "did:plc:abcdefghijklmnopqrstuvwx"


@pytest.fixture(autouse=True)
def _python_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the pure-Python framing: extract_from_bytes uses it here."""
    monkeypatch.setattr(extract, "CarIndex", CarIndex)


def _mixed(n: int, big_every: int = 0):
    rng = random.Random(5)
    recs = []
    for i in range(n):
        if i % 5 == 0:
            extra = {"description": "x" * 20_000} if big_every and i % big_every == 0 else {}
            recs.append(("fm.plyr.track", tid(i), track(i, **extra)))
        else:
            rec = post(i, rng)
            if big_every and i % big_every == 1:
                rec["text"] = "y" * 40_000  # a 3-byte section length varint
            recs.append(("app.bsky.feed.post", tid(i), rec))
    return build_repo(DID, recs)


def _fed(data: bytes, chunk: int) -> CarIndex:
    index = CarIndex(memory_limit=1 << 30)
    for i in range(0, len(data), chunk):
        index.feed(data[i : i + chunk])
    index.finish()
    return index


@pytest.mark.parametrize("chunk", [1, 3, 37, 1000, 65_536])
def test_fast_and_careful_framing_index_the_same_blocks(chunk: int) -> None:
    built = _mixed(120, big_every=10)
    data = built.car()
    whole = CarIndex.from_bytes(data)
    streamed = _fed(data, chunk)
    assert whole._blocks == streamed._blocks
    # every MST node and every plyr record is indexed at its true position
    blocks = read_car(data).blocks
    for cid, block in [*built.nodes.items(), *(v for k, v in built.records.items() if "plyr" in k)]:
        assert whole.get_verified(cid) == block == blocks[cid]
    snap = extract_from_bytes(data, DID, built.key.public_key())
    assert {f"{r.collection}/{r.rkey}": r.cid for r in snap.records} == built.plyr_records()


def test_every_cut_is_either_a_section_boundary_or_a_truncation() -> None:
    built = _mixed(12)
    data = built.car()
    for cut in range(len(data)):
        piece = data[:cut]
        try:
            read_car(piece, verify=False)
            boundary = True
        except CarError:
            boundary = False
        for feed in ("whole", "halves"):
            try:
                if feed == "whole":
                    CarIndex.from_bytes(piece)
                else:
                    _fed(piece, max(1, cut // 2))
                ok = True
            except CarError as exc:
                assert "truncated" in str(exc), (cut, feed, exc)
                ok = False
            assert ok == boundary, (cut, feed)


def test_long_sections_are_limited_in_the_fast_loop_too() -> None:
    block = libipld.encode_dag_cbor({"$type": "x", "t": "z" * 70_000})
    data = car_header([cid_for_cbor(block)]) + car_section(cid_for_cbor(block), block)
    with pytest.raises(CarError, match="section length"):
        CarIndex.from_bytes(data, max_section=50_000)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_values)
def test_block_to_json_fast_path_equals_the_exact_decoder(value: object) -> None:
    raw = libipld.encode_dag_cbor(value)
    exact, _ = _decode_json_item(raw, 0, 0)
    out = block_to_json(raw)
    assert out == exact
    assert repr(out) == repr(exact)  # same map order, same types


@pytest.mark.parametrize("tail", [b"", b"\x01", b"\xa2"])
def test_a_tiny_last_section_is_not_a_truncation(tail: bytes) -> None:
    # raw blocks of 0-1 bytes: the section ends within the bytes the loops peek at
    from protocol.cid import cid_for_raw

    built = _mixed(6)
    data = built.car() + car_section(cid_for_raw(tail), tail)
    assert read_car(data).blocks[cid_for_raw(tail)] == tail
    for chunk in (len(data), 7, 1):
        _fed(data, chunk)
    CarIndex.from_bytes(data)


_block = st.one_of(
    st.binary(min_size=3, max_size=300),
    st.binary(max_size=200).map(lambda b: b"\xa2\x61\x65" + b),  # MST-node-looking
    st.tuples(st.binary(max_size=100), st.binary(max_size=100)).map(
        lambda t: t[0] + b"fm.plyr." + t[1]
    ),
    st.integers(16_384, 40_000).map(lambda n: b"fm.plyr." + b"\x07" * n),  # 3-byte varint
)


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.tuples(st.binary(min_size=32, max_size=32), _block), min_size=1, max_size=25),
    st.lists(st.integers(1, 5000), min_size=1, max_size=8),
)
def test_index_matches_a_reference_for_any_blocks_and_chunking(
    sections: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    sections = list({b"\x01\x71\x12\x20" + d: blk for d, blk in sections}.items())
    data = car_header([sections[0][0]]) + b"".join(car_section(c, b) for c, b in sections)
    expected = {
        c for c, b in sections if b[:1] == b"\xa2" and b[2:3] == b"\x65" or b"fm.plyr." in b
    }
    whole = CarIndex.from_bytes(data)
    assert set(whole._blocks) == expected
    assert all(whole._read(*whole.locations(c)[0]) == b for c, b in sections if c in expected)
    index = CarIndex(memory_limit=1 << 30)
    pos = 0
    for cut in [*cuts, len(data)]:
        index.feed(data[pos : pos + cut])
        pos += cut
    index.feed(data[pos:])
    index.finish()
    assert index._blocks == whole._blocks
