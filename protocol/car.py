"""CAR v1 files: read whole (firehose diffs), read streamed (repo exports), and write.

A CAR is a varint-length-prefixed DAG-CBOR header ``{"version": 1, "roots": [CID, ...]}``
followed by sections, each ``varint(len(cid) + len(block)) || binary CID || block bytes``.

Blocks are returned as the raw bytes received, keyed by binary CID (see protocol/cid.py for the
form). With ``verify=True`` (the default) every block is hashed and compared with its CID: only
the blessed atproto CIDs (CIDv1, sha2-256, dag-cbor or raw) can be verified, so any other CID is
rejected too. libipld's own ``decode_car`` does not do this check (and it decodes every block,
which is wasted work when only a few are needed), so we parse the framing ourselves.

The streamed readers keep one bounded buffer (at most ``max_section`` plus one chunk), never the
whole file: repo exports can be hundreds of megabytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import libipld

from protocol.cid import BLESSED_CID_LEN, DAG_CBOR_PREFIX, RAW_PREFIX, CidError, cid_length
from protocol.errors import ProtocolError
from protocol.wire import TruncatedError, WireError, encode_varint, read_varint

# Largest accepted section (CID + block). atproto caps records at 1 MB and firehose CAR slices
# at 2 MB; anything bigger in a repo export is hostile or broken.
MAX_SECTION = 4 * 1024 * 1024
MAX_HEADER = 64 * 1024

_PREFIXES = frozenset((DAG_CBOR_PREFIX, RAW_PREFIX))

__all__ = [
    "MAX_HEADER",
    "MAX_SECTION",
    "Car",
    "CarError",
    "CarFileReader",
    "CarStream",
    "car_header",
    "car_section",
    "encode_varint",
    "iter_car",
    "iter_car_file",
    "read_car",
    "write_car",
]
_sha256 = hashlib.sha256


class CarError(ProtocolError, ValueError):
    """A CAR file that is truncated, malformed, or whose blocks do not match their CIDs."""


@dataclass(slots=True)
class Car:
    """A fully read CAR: header roots and ``cid -> raw block bytes``."""

    roots: list[bytes]
    blocks: dict[bytes, bytes]


def _varint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """(value, next pos) of the varint at ``pos``, or (-1, pos) if it runs past ``end``."""
    try:
        return read_varint(buf, pos, end)
    except TruncatedError:
        return -1, pos
    except WireError as exc:
        raise CarError(str(exc)) from None


def _parse_header(raw: bytes) -> list[bytes]:
    try:
        header = libipld.decode_dag_cbor(raw)
    except (ValueError, RecursionError) as exc:
        raise CarError(f"bad CAR header: {exc}") from exc
    if not isinstance(header, dict) or header.get("version") != 1:
        raise CarError("bad CAR header: not a CARv1 header")
    roots = header.get("roots")
    if not isinstance(roots, list):
        raise CarError("bad CAR header: roots is not a list")
    for root in roots:
        if not isinstance(root, bytes):
            raise CarError("bad CAR header: root is not a CID")
        try:
            if cid_length(root) != len(root):
                raise CarError("bad CAR header: malformed root CID")
        except (CidError, IndexError) as exc:
            raise CarError("bad CAR header: malformed root CID") from exc
    return roots


def _split_section(
    buf: bytes | bytearray, start: int, end: int, verify: bool
) -> tuple[bytes, bytes]:
    """Split the section ``buf[start:end]`` into (cid, block), verifying the hash if asked."""
    if bytes(buf[start : start + 4]) in _PREFIXES:
        clen = BLESSED_CID_LEN
    else:
        try:
            clen = cid_length(buf, start)
        except (CidError, IndexError) as exc:
            raise CarError(f"malformed CID in CAR section: {exc}") from exc
    if start + clen > end:
        raise CarError("CID runs past the end of its CAR section")
    cid = bytes(buf[start : start + clen])
    block = bytes(buf[start + clen : end])
    if verify and not (
        clen == BLESSED_CID_LEN and cid[:4] in _PREFIXES and _sha256(block).digest() == cid[4:]
    ):
        raise CarError(f"block does not match its CID ({cid.hex()[:16]}...)")
    return cid, block


def read_car(data: bytes, *, verify: bool = True, max_section: int = MAX_SECTION) -> Car:
    """Parse a whole CAR held in memory (firehose diffs, small repos)."""
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    end = len(data)
    hlen, pos = _varint(data, 0, end)
    if hlen < 0:
        raise CarError("truncated CAR header")
    if hlen == 0 or hlen > MAX_HEADER:
        raise CarError(f"bad CAR header length {hlen}")
    if pos + hlen > end:
        raise CarError("truncated CAR header")
    roots = _parse_header(data[pos : pos + hlen])
    pos += hlen
    blocks: dict[bytes, bytes] = {}
    while pos < end:
        first = data[pos]
        if first < 0x80:
            slen = first
            pos += 1
        else:
            slen, pos = _varint(data, pos, end)
            if slen < 0:
                raise CarError("truncated CAR section length")
        if slen == 0 or slen > max_section:
            raise CarError(f"bad CAR section length {slen}")
        send = pos + slen
        if send > end:
            raise CarError("truncated CAR section")
        # Inline fast path for the blessed 36-byte CIDs (nearly every atproto block); the
        # digest is compared in place, without slicing it out of the CID.
        if slen >= BLESSED_CID_LEN and (
            data.startswith(DAG_CBOR_PREFIX, pos) or data.startswith(RAW_PREFIX, pos)
        ):
            block = data[pos + BLESSED_CID_LEN : send]
            if verify and not data.startswith(_sha256(block).digest(), pos + 4):
                raise CarError(f"block does not match its CID ({data[pos : pos + 8].hex()}...)")
            cid = data[pos : pos + BLESSED_CID_LEN]
        else:
            cid, block = _split_section(data, pos, send, verify)
        blocks[cid] = block
        pos = send
    return Car(roots, blocks)


def car_header(roots: list[bytes]) -> bytes:
    """The length-prefixed CARv1 header for ``roots``."""
    header = libipld.encode_dag_cbor({"version": 1, "roots": list(roots)})
    return encode_varint(len(header)) + header


def car_section(cid: bytes, block: bytes) -> bytes:
    """One length-prefixed CAR section."""
    return encode_varint(len(cid) + len(block)) + cid + block


def write_car(roots: list[bytes], blocks: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A whole CAR file from roots and (cid, block) pairs, in the order given."""
    parts = [car_header(roots)]
    for cid, block in blocks:
        parts.append(encode_varint(len(cid) + len(block)))
        parts.append(cid)
        parts.append(block)
    return b"".join(parts)


class _StreamDecoder:
    """Incremental CAR parser over a bounded buffer; shared by the sync and async readers."""

    def __init__(self, verify: bool, max_section: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._verify = verify
        self._max_section = max_section
        self.roots: list[bytes] | None = None

    def feed(self, chunk: bytes) -> None:
        if self._pos and (self._pos >= 65536 or self._pos * 2 >= len(self._buf)):
            # Drop consumed bytes so the buffer stays bounded by one section plus one chunk.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += chunk

    def parse_header(self) -> bool:
        """Parse the header if it is fully buffered; True once roots are known."""
        if self.roots is not None:
            return True
        buf = self._buf
        hlen, pos = _varint(buf, self._pos, len(buf))
        if hlen < 0:
            return False
        if hlen == 0 or hlen > MAX_HEADER:
            raise CarError(f"bad CAR header length {hlen}")
        if pos + hlen > len(buf):
            return False
        self.roots = _parse_header(bytes(buf[pos : pos + hlen]))
        self._pos = pos + hlen
        return True

    def next_block(self) -> tuple[bytes, bytes] | None:
        """The next complete (cid, block), or None if more input is needed."""
        buf = self._buf
        end = len(buf)
        if self._pos >= end:
            return None
        slen, pos = _varint(buf, self._pos, end)
        if slen < 0:
            return None
        if slen == 0 or slen > self._max_section:
            raise CarError(f"bad CAR section length {slen}")
        if pos + slen > end:
            return None
        item = _split_section(buf, pos, pos + slen, self._verify)
        self._pos = pos + slen
        return item

    def finish(self) -> None:
        """Called at end of input: anything left unparsed means the CAR was cut short."""
        if self.roots is None:
            raise CarError("truncated CAR header")
        if self._pos < len(self._buf):
            raise CarError("truncated CAR section")


class CarStream:
    """Async CAR reader: ``await stream.roots()``, then ``async for cid, block in stream``."""

    def __init__(
        self, chunks: AsyncIterable[bytes], *, verify: bool = True, max_section: int = MAX_SECTION
    ) -> None:
        self._chunks: AsyncIterator[bytes] = aiter(chunks)
        self._dec = _StreamDecoder(verify, max_section)
        self._done = False

    async def _pull(self) -> bool:
        if self._done:
            return False
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._done = True
            return False
        self._dec.feed(chunk)
        return True

    async def roots(self) -> list[bytes]:
        while not self._dec.parse_header():
            if not await self._pull():
                self._dec.finish()
        assert self._dec.roots is not None
        return self._dec.roots

    def __aiter__(self) -> CarStream:
        return self

    async def __anext__(self) -> tuple[bytes, bytes]:
        if self._dec.roots is None:
            await self.roots()
        while True:
            item = self._dec.next_block()
            if item is not None:
                return item
            if not await self._pull():
                self._dec.finish()
                raise StopAsyncIteration


def iter_car(
    chunks: AsyncIterable[bytes], *, verify: bool = True, max_section: int = MAX_SECTION
) -> CarStream:
    """Stream a CAR from an async iterable of byte chunks (e.g. an HTTP response body)."""
    return CarStream(chunks, verify=verify, max_section=max_section)


class CarFileReader:
    """Sync CAR reader over a binary file object: ``reader.roots()``, then iterate."""

    def __init__(
        self,
        fileobj: BinaryIO,
        *,
        verify: bool = True,
        chunk_size: int = 256 * 1024,
        max_section: int = MAX_SECTION,
    ) -> None:
        self._file = fileobj
        self._chunk_size = chunk_size
        self._dec = _StreamDecoder(verify, max_section)
        self._done = False

    def _pull(self) -> bool:
        if self._done:
            return False
        chunk = self._file.read(self._chunk_size)
        if not chunk:
            self._done = True
            return False
        self._dec.feed(chunk)
        return True

    def roots(self) -> list[bytes]:
        while not self._dec.parse_header():
            if not self._pull():
                self._dec.finish()
        assert self._dec.roots is not None
        return self._dec.roots

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        self.roots()
        while True:
            item = self._dec.next_block()
            if item is not None:
                yield item
                continue
            if not self._pull():
                self._dec.finish()
                return


def iter_car_file(
    fileobj: BinaryIO,
    *,
    verify: bool = True,
    chunk_size: int = 256 * 1024,
    max_section: int = MAX_SECTION,
) -> CarFileReader:
    """Stream a CAR from a binary file object, holding only a bounded buffer."""
    return CarFileReader(fileobj, verify=verify, chunk_size=chunk_size, max_section=max_section)
