"""CAR reading (whole and streamed, verified) and writing."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import libipld
import pytest

from protocol import car as car_mod
from protocol.car import (
    CarError,
    car_header,
    car_section,
    encode_varint,
    iter_car,
    iter_car_file,
    read_car,
    write_car,
)
from protocol.cid import cid_for_cbor, cid_for_raw
from protocol.crypto import PrivateKey
from tests.support.repo_builder import RepoBuilder


@pytest.fixture(scope="module")
def repo() -> RepoBuilder:
    rb = RepoBuilder("did:plc:cartest", PrivateKey.generate("k256"))
    for i in range(300):
        coll = "fm.plyr.track" if i % 10 == 0 else "app.bsky.feed.post"
        rb.put(coll, f"3k{i:011d}", {"$type": coll, "text": f"post {i}", "n": i})
    rb.commit()
    return rb


@pytest.fixture(scope="module")
def full_car(repo: RepoBuilder) -> bytes:
    return repo.full_car()


def _small_car() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    blocks = [(cid_for_cbor(b), b) for b in (b"\xa1aa\x01", b"\xa1ab\x02", b"\x80")]
    blocks.append((cid_for_raw(b"raw blob bytes"), b"raw blob bytes"))
    return write_car([blocks[0][0]], blocks), blocks


def test_read_whole_car_matches_libipld(full_car: bytes, repo: RepoBuilder) -> None:
    car = read_car(full_car)
    assert car.roots == [repo.head.commit_cid]
    header, decoded = libipld.decode_car(full_car)
    assert header["roots"] == car.roots
    assert set(decoded) == set(car.blocks)
    for cid, raw in car.blocks.items():
        assert libipld.decode_dag_cbor(raw) == decoded[cid]
    assert car.blocks == repo.blocks()


def test_raw_codec_blocks_and_write_round_trip() -> None:
    data, blocks = _small_car()
    car = read_car(data)
    assert car.roots == [blocks[0][0]]
    assert car.blocks == dict(blocks)
    assert car_header(car.roots) + b"".join(car_section(c, b) for c, b in blocks) == data


def test_duplicate_blocks_and_empty_roots_are_accepted() -> None:
    cid = cid_for_cbor(b"\xa0")
    data = write_car([], [(cid, b"\xa0"), (cid, b"\xa0")])
    assert read_car(data).blocks == {cid: b"\xa0"}
    assert read_car(data).roots == []


def _section_boundaries(data: bytes) -> set[int]:
    hlen, pos = car_mod._varint(data, 0, len(data))
    pos += hlen
    bounds = {pos}
    while pos < len(data):
        slen, pos = car_mod._varint(data, pos, len(data))
        pos += slen
        bounds.add(pos)
    return bounds


def test_every_truncation_is_an_error_or_a_shorter_valid_car() -> None:
    data, blocks = _small_car()
    bounds = _section_boundaries(data)
    for cut in range(len(data)):
        prefix = data[:cut]
        if cut in bounds:
            assert set(read_car(prefix).blocks) <= {c for c, _ in blocks}
        else:
            with pytest.raises(CarError):
                read_car(prefix)


def test_cid_mismatch_detected_only_when_verifying() -> None:
    good = b"\xa1aa\x01"
    cid = cid_for_cbor(good)
    bad = write_car([cid], [(cid, b"\xa1aa\x02")])
    with pytest.raises(CarError, match="does not match"):
        read_car(bad)
    assert read_car(bad, verify=False).blocks[cid] == b"\xa1aa\x02"


def test_unverifiable_cid_rejected_when_verifying() -> None:
    import hashlib

    block = b"\xa0"
    dag_pb = bytes((0x01, 0x70, 0x12, 0x20)) + hashlib.sha256(block).digest()
    data = write_car([dag_pb], [(dag_pb, block)])
    with pytest.raises(CarError):
        read_car(data)
    assert read_car(data, verify=False).blocks == {dag_pb: block}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff" * 12,  # runaway varint
        b"\x00",  # zero-length header
        encode_varint(3) + b"\xa0",  # header shorter than declared
        encode_varint(1) + b"\xa0",  # empty map: no version
        encode_varint(5) + libipld.encode_dag_cbor([1, 2, 3, 4]),
        car_header([])[:-1] + b"\x02",  # garbage
    ],
)
def test_bad_headers(data: bytes) -> None:
    with pytest.raises(CarError):
        read_car(data)


def test_bad_header_version_and_roots() -> None:
    for header in [
        {"version": 2, "roots": []},
        {"version": 1, "roots": "x"},
        {"version": 1, "roots": ["notacid"]},
        {"version": 1, "roots": [b"\x01\x71"]},
    ]:
        raw = libipld.encode_dag_cbor(header)
        with pytest.raises(CarError):
            read_car(encode_varint(len(raw)) + raw)


def test_bad_sections() -> None:
    head = car_header([])
    with pytest.raises(CarError):
        read_car(head + b"\x00")  # zero-length section
    with pytest.raises(CarError):
        read_car(head + b"\x80\x80")  # truncated varint
    with pytest.raises(CarError):
        read_car(head + encode_varint(10) + b"\x01\x71\x12\x20" + b"\x00" * 6)  # CID overruns
    with pytest.raises(CarError):
        read_car(head + encode_varint(5) + b"\x02\x71\x12\x20\x00")  # CID version 2
    big = head + encode_varint(100) + b"\x00" * 100
    with pytest.raises(CarError, match="section length"):
        read_car(big, max_section=50)


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("size", [1, 7, 1000, 1 << 30])
async def test_streamed_equals_whole(full_car: bytes, size: int) -> None:
    data = full_car if size > 1 else full_car[:20_000]  # byte-at-a-time: keep it quick
    if size == 1:
        # Cut at a section boundary so the prefix is itself a valid CAR.
        data = data[: max(b for b in _section_boundaries(full_car) if b <= len(data))]
    whole = read_car(data)
    stream = iter_car(_chunks(data, size))
    assert await stream.roots() == whole.roots
    got = [item async for item in stream]
    assert dict(got) == whole.blocks
    assert len(got) == len(whole.blocks)


async def test_streamed_without_calling_roots_first() -> None:
    data, blocks = _small_car()
    got = [item async for item in iter_car(_chunks(data, 3))]
    assert got == blocks


async def test_streamed_truncation_and_mismatch() -> None:
    data, _ = _small_car()
    with pytest.raises(CarError, match="truncated"):
        async for _ in iter_car(_chunks(data[:-3], 7)):
            pass
    with pytest.raises(CarError, match="truncated CAR header"):
        await iter_car(_chunks(data[:5], 2)).roots()
    cid = cid_for_cbor(b"\xa0")
    bad = write_car([cid], [(cid, b"\xa1")])
    with pytest.raises(CarError, match="does not match"):
        async for _ in iter_car(_chunks(bad, 4)):
            pass
    assert [c async for c, _ in iter_car(_chunks(bad, 4), verify=False)] == [cid]


async def test_streamed_buffer_stays_bounded(full_car: bytes) -> None:
    """The stream never holds more than about one chunk plus one section."""
    chunk = 512
    stream = iter_car(_chunks(full_car, chunk))
    await stream.roots()
    largest_section = 0
    peak = 0
    async for cid, block in stream:
        largest_section = max(largest_section, len(cid) + len(block))
        peak = max(peak, len(stream._dec._buf))
    assert peak <= 2 * chunk + largest_section + 16
    assert peak < len(full_car) / 20


def test_iter_car_file_equals_whole(full_car: bytes) -> None:
    whole = read_car(full_car)
    for chunk_size in (7, 65536):
        reader = iter_car_file(io.BytesIO(full_car), chunk_size=chunk_size)
        assert reader.roots() == whole.roots
        assert dict(reader) == whole.blocks
    with pytest.raises(CarError):
        list(iter_car_file(io.BytesIO(full_car[:-1]), chunk_size=100))
    with pytest.raises(CarError):
        iter_car_file(io.BytesIO(b"")).roots()
