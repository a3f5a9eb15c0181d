"""The pure-Python CAR index unrolls the section length varint; it must read what
protocol.wire.read_varint reads, whole or fed byte by byte (edge lengths, lenient encodings)."""

from __future__ import annotations

import pytest

from indexer.backfill.car_index import PythonCarIndex
from protocol.car import CarError, car_header
from protocol.cid import cid_for_cbor
from protocol.wire import encode_varint, read_varint

# Section lengths at each varint width boundary (up to the 4 MB section limit).
LENGTHS = [40, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 4 * 1024 * 1024]


def _encodings(length: int) -> list[bytes]:
    """The minimal varint of `length`, and padded (non-minimal) ones of at most 4 bytes."""
    minimal = encode_varint(length)
    out = [minimal]
    padded = bytearray(minimal)
    while len(padded) < 4:
        padded[-1] |= 0x80
        padded.append(0)
        out.append(bytes(padded))
    return out


def _car_with(length_varint: bytes) -> tuple[bytes, bytes, int, int]:
    length, _ = read_varint(length_varint, 0)
    block = b"\xa2\x61e" + b"\x00" * (length - 36 - 3)  # shaped like an MST node: indexed
    cid = cid_for_cbor(block)
    header = car_header([cid])
    return (
        header + length_varint + cid + block,
        cid,
        len(header) + len(length_varint) + 36,
        len(block),
    )


@pytest.mark.parametrize("length", LENGTHS)
def test_unrolled_varint_agrees_with_the_shared_one(length: int) -> None:
    for enc in _encodings(length):
        data, cid, offset, size = _car_with(enc)
        whole = PythonCarIndex.from_bytes(data)
        assert whole.locations(cid) == [(offset, size)], enc.hex()
        if length <= 16384:  # byte by byte exercises the careful loop and carried heads
            fed = PythonCarIndex()
            for i in range(len(data)):
                fed.feed(data[i : i + 1])
            fed.finish()
            assert fed.locations(cid) == [(offset, size)], enc.hex()


def test_longer_varints_are_refused() -> None:
    data, cid, _offset, _size = _car_with(encode_varint(40))
    prefix = car_header([cid])
    five = b"\xa8\x80\x80\x80\x00"  # 40, padded to 5 bytes
    assert read_varint(five, 0) == (40, 5)  # readable, but no section needs it: refused
    with pytest.raises(CarError, match="varint too long"):
        PythonCarIndex.from_bytes(prefix + five + data[len(prefix) + 1 :])
