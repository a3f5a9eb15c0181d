"""Receiving a file: stream it to a temporary file, hashing as it goes, within a size limit.

The body is read in pieces and written out about every `chunk_bytes` (8 MB by default), so an
upload costs at most one chunk of memory whatever its size. The limit is checked as bytes
arrive: the first byte over it stops the transfer (the caller answers 413). A sender that goes
quiet for `idle_timeout_s`, or averages less than `min_rate` bytes/s once `grace_s` has passed,
is cut off (UploadTimeout; the caller answers 408): a stalled or trickling client cannot hold a
connection and a temp file for long. Whatever happens - limit, timeout, disconnect,
cancellation - the temporary file is removed unless the caller took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from media.sniff import HEAD_BYTES


class UploadTimeout(Exception):
    """The sender stalled (`idle`: sends nothing now) or is too slow; the message says which."""

    def __init__(self, message: str, *, idle: bool) -> None:
        super().__init__(message)
        self.idle = idle


class TooLarge(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is larger than the limit of {limit} bytes")
        self.limit = limit


@dataclass
class Received:
    path: Path
    size: int
    sha256: str
    head: bytes  # the first HEAD_BYTES, for sniffing

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@contextlib.asynccontextmanager
async def temp_path(tmp_dir: Path, suffix: str = ".part") -> AsyncIterator[Path]:
    """A fresh path in tmp_dir, removed on exit whatever happened."""
    await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="plyr-", suffix=suffix)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


async def receive(
    read: Callable[[], Awaitable[bytes]],
    *,
    tmp_dir: Path,
    limit: int,
    chunk_bytes: int,
    on_bytes: Callable[[int], object] | None = None,
    idle_timeout_s: float | None = None,
    min_rate: int | None = None,
    grace_s: float = 0.0,
) -> Received:
    """Read pieces from `read()` (an awaitable returning bytes, b"" at the end) into a temp file.

    Raises TooLarge as soon as the total passes `limit`, UploadTimeout when one read waits more
    than `idle_timeout_s` or the average rate after `grace_s` is under `min_rate` bytes/s.
    On any exception the file is gone.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="plyr-upload-", suffix=".part")
    path = Path(name)
    digest = hashlib.sha256()
    head = bytearray()
    pending: list[bytes] = []
    pending_size = 0
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                try:
                    async with asyncio.timeout(idle_timeout_s):
                        piece = await read()
                except TimeoutError:
                    raise UploadTimeout(f"no data arrived for {idle_timeout_s:g} s", idle=True) from None
                if not piece:
                    break
                size += len(piece)
                if size > limit:
                    raise TooLarge(limit)
                if min_rate is not None:
                    late = loop.time() - started - grace_s
                    if late > 0 and size < min_rate * late:
                        raise UploadTimeout(f"the upload is slower than {min_rate} bytes/s", idle=False)
                digest.update(piece)
                if len(head) < HEAD_BYTES:
                    head += piece[: HEAD_BYTES - len(head)]
                pending.append(piece)
                pending_size += len(piece)
                if pending_size >= chunk_bytes:
                    block = b"".join(pending)
                    pending.clear()
                    pending_size = 0
                    await asyncio.to_thread(out.write, block)
                    del block
                    if on_bytes is not None:
                        on_bytes(size)
            if pending:
                await asyncio.to_thread(out.write, b"".join(pending))
                pending.clear()
        return Received(path=path, size=size, sha256=digest.hexdigest(), head=bytes(head))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
