"""CarStore keeps the first bytes in memory and the overflow in a file; reads see one stream."""

from __future__ import annotations

import random

import pytest

from indexer.backfill.car_store import CarStore


class _Stored(CarStore):
    """Only the storage half (the section indexes add framing on top)."""

    def feed(self, chunk: bytes) -> None:
        self._store(chunk)
        self.size += len(chunk)


@pytest.mark.parametrize("limit", [0, 1000, 50_000, 1 << 30])
def test_reads_anywhere_equal_the_bytes_fed(limit: int, tmp_path) -> None:
    rng = random.Random(limit)
    data = rng.randbytes(120_000)
    store = _Stored(memory_limit=limit, spill_dir=tmp_path)
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, 300, 4096, 20_000])
        store.feed(data[pos : pos + step])
        pos += step
    assert store.spilled == (limit < len(data))
    for _ in range(500):
        offset = rng.randrange(len(data))
        length = rng.choice([1, 36, 500, 30_000])
        assert store._read(offset, length) == data[offset : offset + length]
    # around the memory/file boundary exactly
    held = store._held
    for offset in range(max(0, held - 3), min(len(data), held + 3)):
        assert store._read(offset, 5) == data[offset : offset + 5]
    with store._open_stored() as stream:
        assert stream.read() == data
    store.close()
    assert not store.spilled
