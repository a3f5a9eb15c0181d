"""The bytes of a streamed repo CAR, kept for the MST walk: the first 16 MB in memory as received,
the rest in a temporary file.

Both section indexes (`car_index.NativeCarIndex`, `car_index_python.PythonCarIndex`) store what
they are fed here and read blocks back by offset; they differ only in how they frame sections
and which blocks they remember. Every block handed out by `get_verified` has been hashed
against the CID it was asked for, on the bytes received.
"""

from __future__ import annotations

import bisect
import io
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Self

import libipld

from protocol.car import MAX_HEADER, MAX_SECTION, CarError
from protocol.cid import cid_to_str, verify_block
from protocol.wire import TruncatedError, WireError, read_varint

DEFAULT_MEMORY_LIMIT = 16 * 1024 * 1024


def parse_car_header(buf: bytes | bytearray | memoryview) -> tuple[list[bytes], int] | None:
    """(roots, where the sections start) once `buf` holds the whole CAR v1 header, else None."""
    try:
        hlen, pos = read_varint(buf, 0)
    except TruncatedError:
        return None
    except WireError:
        raise CarError("bad CAR header length") from None
    if hlen == 0 or hlen > MAX_HEADER:
        raise CarError(f"bad CAR header length {hlen}")
    if pos + hlen > len(buf):
        return None
    try:
        header = libipld.decode_dag_cbor(bytes(buf[pos : pos + hlen]))
    except (ValueError, RecursionError) as exc:
        raise CarError(f"bad CAR header: {exc}") from exc
    roots = header.get("roots") if isinstance(header, dict) else None
    if not isinstance(header, dict) or header.get("version") != 1 or not isinstance(roots, list):
        raise CarError("bad CAR header: not a CARv1 header")
    if not roots or not all(isinstance(r, bytes) for r in roots):
        raise CarError("bad CAR header: no root CID")
    return [bytes(r) for r in roots], pos + hlen


class CarStore:
    """Storage and verified reads shared by the section indexes (subclasses frame and index)."""

    def __init__(
        self,
        *,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        spill_dir: str | Path | None = None,
        max_section: int = MAX_SECTION,
    ) -> None:
        self.roots: list[bytes] | None = None
        self.size = 0  # bytes received
        self._memory_limit = memory_limit
        self._spill_dir = spill_dir
        self._max_section = max_section
        # Received chunks kept as they are (no copy), with their offsets, until the limit.
        self._chunks: list[bytes] | None = []
        self._chunk_starts: list[int] = []
        self._held = 0
        self._whole: bytes | None = None  # the CAR given whole (no copy)
        self._file: BinaryIO | None = None

    # ---- what a section index provides ----

    def feed(self, chunk: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def locations(self, cid: bytes) -> list[tuple[int, int]]:
        """Candidate (offset, length) of the block `cid` in the stored bytes (unverified)."""
        raise NotImplementedError

    def rescan(self, wanted: set[bytes]) -> int:
        """Look again for blocks the index did not keep; returns how many were found."""
        return 0

    @property
    def indexed_blocks(self) -> int:
        raise NotImplementedError

    # ---- construction and lifetime ----

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs: Any) -> Self:
        """Index a CAR held in memory (no copy is made)."""
        index = cls(**kwargs)
        index._chunks = None
        index._whole = data
        index._index_whole(data)
        index.size = len(data)
        index.finish()
        return index

    def _index_whole(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks = None
        self._chunk_starts = []
        self._whole = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def spilled(self) -> bool:
        return self._file is not None

    # ---- storage ----

    def _store(self, chunk: bytes) -> None:
        # The first `memory_limit` bytes stay in memory as received; the rest goes to a
        # temporary file (deleted on close). Only the overflow is ever written out.
        if self._file is None and self._held + len(chunk) <= self._memory_limit:
            assert self._chunks is not None
            self._chunk_starts.append(self._held)
            self._chunks.append(bytes(chunk))  # (no copy when it already is bytes)
            self._held += len(chunk)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._spill_dir, prefix="plyr-car-")  # noqa: SIM115
        self._file.write(chunk)

    def _read(self, offset: int, length: int) -> bytes:
        if self._whole is not None:
            return self._whole[offset : offset + length]
        held = self._held
        if offset >= held:
            if self._file is None:
                return b""
            self._file.flush()
            return os.pread(self._file.fileno(), length, offset - held)
        if offset + length > held:  # across the memory/file boundary
            return self._read(offset, held - offset) + self._read(held, offset + length - held)
        assert self._chunks is not None
        chunks, starts = self._chunks, self._chunk_starts
        i = bisect.bisect_right(starts, offset) - 1
        rel = offset - starts[i]
        if rel + length <= len(chunks[i]):
            return chunks[i][rel : rel + length]
        # A block across chunks: join its pieces.
        pieces = [chunks[i][rel:]]
        have = len(pieces[0])
        while have < length and i + 1 < len(chunks):
            i += 1
            pieces.append(chunks[i][: length - have])
            have += len(pieces[-1])
        return b"".join(pieces)

    def _open_stored(self) -> BinaryIO:
        """All the stored bytes as one readable stream (memory part, then the spill file)."""
        if self._whole is not None:
            return io.BytesIO(self._whole)
        if self._file is not None:
            self._file.flush()
        return io.BufferedReader(_StoredReader(self))

    # ---- verified reads ----

    def has(self, cid: bytes) -> bool:
        """Whether the index knows where `cid` may be (its bytes are not checked here)."""
        return bool(self.locations(cid))

    def get_verified(self, cid: bytes) -> bytes | None:
        """The block's bytes after checking they hash to `cid`; None when not indexed.

        Every candidate location is tried, so a section that lies about its CID (or shares the
        index key) cannot hide the real block; if none hashes to `cid`, the CAR is corrupt.
        """
        candidates = self.locations(cid)
        for offset, length in candidates:
            raw = self._read(offset, length)
            if verify_block(cid, raw):
                return raw
        if candidates:
            raise CarError(f"block {cid_to_str(cid)} does not match its CID")
        return None

    def get_commit(self) -> bytes | None:
        """The verified root (commit) block, or None when the CAR does not hold it."""
        assert self.roots
        return self.get_verified(self.roots[0])


class _StoredReader(io.RawIOBase):
    """Sequential reads over a CarStore's stored bytes, through `CarStore._read`."""

    def __init__(self, store: CarStore) -> None:
        self._store = store
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._store._read(self._pos, min(len(buffer), self._store.size - self._pos))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)
