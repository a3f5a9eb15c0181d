"""The C section index (protocol._car_index) against a plain reference framer.

The reference below frames a CAR the obvious way (varint, CID, block) and is the oracle: for any
sections, CID shapes and chunking, the C index must file every block at its true offset and
find it by CID, and must reject malformed heads and truncations the way the Python framing does.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.backfill import car_index
from protocol.car import CarError, car_header, car_section, encode_varint
from protocol.cid import cid_for_cbor

if car_index.SectionIndex is None:  # pragma: no cover - only on machines without a compiler
    from tests.conftest import skip_unless_required

    skip_unless_required("protocol._car_index was not built (no C compiler?)")

SectionIndex = car_index.SectionIndex
NativeCarIndex = car_index.NativeCarIndex
MAX_SECTION = 4 * 1024 * 1024


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def reference_sections(data: bytes, start: int) -> list[tuple[bytes, int, int]]:
    """(cid, block offset, block length) of every section, framed one by one."""
    out = []
    pos = start
    while pos < len(data):
        length, body = _read_varint(data, pos)
        if data[body : body + 2] == b"\x12\x20":
            cid_end = body + 34
        else:
            at = body + 1  # version 1
            for _ in range(2):  # codec, hash code
                _v, at = _read_varint(data, at)
            digest_len, at = _read_varint(data, at)
            cid_end = at + digest_len
        out.append((data[body:cid_end], cid_end, body + length - cid_end))
        pos = body + length
    return out


def _cid_v1(codec: int, hash_code: int, digest: bytes) -> bytes:
    return (
        b"\x01"
        + encode_varint(codec)
        + encode_varint(hash_code)
        + encode_varint(len(digest))
        + digest
    )


_cids = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda d: b"\x01\x71\x12\x20" + d),  # dag-cbor
    st.binary(min_size=32, max_size=32).map(lambda d: b"\x01\x55\x12\x20" + d),  # raw
    st.binary(min_size=32, max_size=32).map(lambda d: b"\x12\x20" + d),  # CIDv0
    st.binary(max_size=6).map(lambda d: _cid_v1(0x55, 0x00, d)),  # identity, short digest
    st.binary(min_size=64, max_size=64).map(lambda d: _cid_v1(0x71, 0xB240, d)),  # blake2b-512
    st.binary(min_size=32, max_size=32).map(lambda d: _cid_v1(0x0129, 0x1E, d)),  # 2-byte codec
)
_blocks = st.one_of(
    st.binary(max_size=300),
    st.integers(128, 20_000).map(lambda n: b"\x07" * n),  # 2- and 3-byte length varints
)


def _car(sections: list[tuple[bytes, bytes]]) -> tuple[bytes, int]:
    header = car_header([sections[0][0] if sections else cid_for_cbor(b"\xa0")])
    return header + b"".join(car_section(c, b) for c, b in sections), len(header)


def _fed(data: bytes, start: int, cuts: list[int]) -> SectionIndex:
    index = SectionIndex(start, MAX_SECTION)
    pos = start
    for cut in cuts:
        index.feed(data[pos : pos + cut])
        pos += cut
    index.feed(data[pos:])
    index.finish()
    return index


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_cids, _blocks), max_size=30),
    st.lists(st.integers(0, 3000), max_size=10),
)
def test_files_every_block_where_the_reference_framer_finds_it(
    sections: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    data, start = _car(sections)
    expected = reference_sections(data, start)
    assert [(c, data[o : o + n]) for c, o, n in expected] == sections
    for index in (_fed(data, start, []), _fed(data, start, cuts), _fed(data, start, [1] * 200)):
        assert index.sections == len(sections)
        assert index.position == len(data)
        for cid, offset, length in expected:
            assert (offset, length) in index.find(cid)
            # whatever else shares the key, every candidate is a real block of the CAR
            assert set(index.find(cid)) <= {(o, n) for _c, o, n in expected}


def test_a_cid_absent_from_the_car_finds_nothing() -> None:
    data, start = _car([(cid_for_cbor(b"\xa0"), b"\xa0")])
    index = _fed(data, start, [])
    assert index.find(cid_for_cbor(b"\xf6")) == []
    assert index.find(b"") == []


def test_every_cut_is_a_boundary_or_a_truncation() -> None:
    blocks = [b"\xa1ax\x01", b"", b"z" * 200, b"\xf6"]
    data, start = _car([(cid_for_cbor(b), b) for b in blocks])
    boundaries = {start} | {o + n for _c, o, n in reference_sections(data, start)}
    for cut in range(start, len(data) + 1):
        for pieces in ([cut - start], [1] * (cut - start)):
            index = SectionIndex(start, MAX_SECTION)
            pos = start
            for size in pieces:
                index.feed(data[pos : pos + size])
                pos += size
            if cut in boundaries:
                index.finish()
            else:
                with pytest.raises(ValueError, match="truncated"):
                    index.finish()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (b"\xff\xff\xff\xff\xff\x01", "varint too long"),
        (b"\x00", "bad CAR section length"),
        (encode_varint(MAX_SECTION + 1) + b"\x01\x71", "bad CAR section length"),
        (encode_varint(40) + b"\x02\x71\x12\x20" + b"\x00" * 36, "not CIDv0 or CIDv1"),
        (encode_varint(80) + b"\x01\x71\x12\x41" + b"\x00" * 76, "digest length"),
        (encode_varint(20) + b"\x01\x71\x12\x20" + b"\x00" * 16, "shorter than its CID"),
        (encode_varint(30) + b"\x12\x20" + b"\x00" * 28, "shorter than its CID"),
        (encode_varint(40) + b"\x01" + b"\xff" * 10, "codec"),
    ],
)
def test_malformed_heads_are_errors_whole_or_byte_by_byte(section: bytes, message: str) -> None:
    data, start = _car([(cid_for_cbor(b"\xa0"), b"\xa0")])
    data += section
    with pytest.raises(CarError, match=message):
        NativeCarIndex.from_bytes(data)
    index = NativeCarIndex()
    with pytest.raises(CarError, match=message):
        for i in range(len(data)):
            index.feed(data[i : i + 1])
        index.finish()


def test_a_block_is_found_past_lying_sections_and_key_collisions() -> None:
    real = b"\xa1dtexteright"
    cid = cid_for_cbor(real)
    liar = b"\xa1dtextdwrong"  # claims the real block's CID
    same_key = b"\x01\x71\x12\x20" + bytes(24) + cid[-8:]  # another CID with the same last 8 bytes
    data, _start = _car([(cid, liar), (same_key, b"\xf6"), (cid, real)])
    index = NativeCarIndex.from_bytes(data)
    assert len(index.locations(cid)) == 3  # every section filed under that key is a candidate
    assert index.get_verified(cid) == real
    only_liar, _ = _car([(cid, liar)])
    with pytest.raises(CarError, match="does not match its CID"):
        NativeCarIndex.from_bytes(only_liar).get_verified(cid)


def test_the_index_grows_past_its_first_table() -> None:
    blocks = [str(i).encode() for i in range(5000)]
    sections = [(b"\x01\x55\x12\x20" + hashlib.sha256(b).digest(), b) for b in blocks]
    data, start = _car(sections)
    index = _fed(data, start, [])
    assert index.sections == 5000
    assert index.memory >= 16 * 5000
    for (cid, block), (_c, offset, length) in zip(
        sections, reference_sections(data, start), strict=True
    ):
        assert index.find(cid) == [(offset, length)]
        assert data[offset : offset + length] == block


def test_constructor_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        SectionIndex(0, MAX_SECTION)
    with pytest.raises(ValueError):
        SectionIndex(10, 1 << 30)
    with pytest.raises(TypeError):
        SectionIndex(10, MAX_SECTION).feed("text")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_cids, _blocks), max_size=6),
    st.binary(max_size=200),
    st.integers(0, 10_000),
    st.lists(st.integers(1, 300), max_size=6),
)
def test_garbage_is_refused_or_framed_like_the_reference(
    sections: list[tuple[bytes, bytes]], garbage: bytes, at: int, cuts: list[int]
) -> None:
    """Any bytes spliced into a CAR: a ValueError, or the same framing as the reference.
    (tests/fuzz/fuzz_car_index.py runs the long version, also under AddressSanitizer.)"""
    data, start = _car(sections)
    at = start + at % (len(data) - start + 1)
    data = data[:at] + garbage + data[at:]
    try:
        index = _fed(data, start, cuts)
    except ValueError:
        return
    expected = reference_sections(data, start)
    assert index.sections == len(expected)
    for cid, offset, length in expected:
        assert (offset, length) in index.find(cid)
