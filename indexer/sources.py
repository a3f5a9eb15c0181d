"""Where frames come from: a relay/PDS websocket, Jetstream, or a capture file.

Every source has a `name` (the key of its row in `cursors`), a `format` ("cbor" for
subscribeRepos frames, "jetstream" for Jetstream JSON) and `batches(resume)`: an async iterator
of lists of raw messages. Lists, not single messages, so that a capture file can be read at
hundreds of thousands of frames/s without paying the async-iteration cost per frame; the
websocket sources yield one-message lists. `resume()` returns the cursor to reconnect from
(the last seq the consumer has seen), read at every (re)connect.

Websocket sources reconnect forever with exponential backoff and full jitter. Half-open
connections are caught by websocket pings (no per-message timeouts on the receive path).
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import connect

from core.backoff import Backoff
from core.errors import PlyrError
from indexer import metrics
from indexer.network_plays import NETWORK_PLAY_COLLECTIONS

log = logging.getLogger("plyr.indexer")

SUBSCRIBE_PATH = "/xrpc/com.atproto.sync.subscribeRepos"
MAX_MESSAGE = 16 * 1024 * 1024  # relay frames are capped far lower; guard against runaways
# `plyr capture` records what its websocket accepted (max_size=MAX_MESSAGE): no frame in a
# capture is longer, so a larger length prefix is corruption, not a frame to buffer.
MAX_CAPTURE_FRAME = MAX_MESSAGE
CHUNK = 1 << 20
Resume = Callable[[], int | None]


class Source(Protocol):
    name: str
    format: str
    live: bool

    def batches(self, resume: Resume) -> AsyncIterator[list[bytes]]: ...


# ---- capture files ----------------------------------------------------------------------------


def open_capture(path: Path) -> BinaryIO:
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise PlyrError(f"{path}: no such capture file") from None
    except OSError as exc:
        raise PlyrError(f"{path}: cannot open ({exc.strerror})") from None
    if path.suffix == ".zst":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    return raw


def split_frames(buf: bytes, start: int) -> tuple[list[bytes], int]:
    """Whole frames in buf[start:] (4-byte LE length + frame) and where the remainder starts.
    Stops at a length over MAX_CAPTURE_FRAME (corruption: the caller reports it)."""
    out: list[bytes] = []
    n = len(buf)
    pos = start
    unpack = struct.unpack_from
    limit = MAX_CAPTURE_FRAME  # a local: this loop runs once per frame
    while pos + 4 <= n:
        (length,) = unpack("<I", buf, pos)
        end = pos + 4 + length
        if end > n or length > limit:
            break
        out.append(buf[pos + 4 : end])
        pos = end
    return out, pos


class CaptureUnreadable(PlyrError):
    """A capture that cannot be read past `offset` (a byte offset in the capture format, i.e.
    of the decompressed stream for .zst): a length prefix over the frame limit, a cut frame, a
    broken zstd stream. `unread` bytes were not read (None when a broken stream hides it)."""

    def __init__(self, path: Path, offset: int, unread: int | None, reason: str) -> None:
        self.path, self.offset, self.unread, self.reason = path, offset, unread, reason
        lost = f"{unread} bytes" if unread is not None else "the rest of the file"
        super().__init__(
            f"{path}: capture unreadable from byte {offset} ({reason}): {lost} not read; "
            "only the frames before it were read"
        )


class CaptureSource:
    """Frames from a capture file; ends at end of file. A plain capture is memory-mapped (the
    page cache is the buffer); a .zst one is streamed, holding at most about two frames (each
    at most MAX_CAPTURE_FRAME) and a read chunk. Either way reading is linear in the file size,
    and anything that stops the read before the end (see CaptureUnreadable) is raised after the
    frames before it have been yielded: a replay never reports success for a file it did not
    read whole."""

    format = "cbor"
    live = False

    def __init__(self, path: Path, *, name: str | None = None) -> None:
        self.path = path
        self.name = name or f"capture:{path.name}"

    def _read(self, stream: BinaryIO, size: int, offset: int) -> bytes:
        try:
            return stream.read(size)
        except Exception as exc:  # zstd raises its own errors for corrupt input
            raise CaptureUnreadable(self.path, offset, None, f"cannot read: {exc}") from None

    def _unreadable(self, stream: BinaryIO, offset: int, held: int, reason: str) -> CaptureUnreadable:
        """The error for a read stopped at `offset`, with `held` bytes past it already read."""
        unread: int | None
        if self.path.suffix == ".zst":
            # No size up front: count the rest of the stream (chunk by chunk, nothing kept).
            unread = held
            try:
                while chunk := stream.read(CHUNK):
                    unread += len(chunk)
            except Exception:  # noqa: BLE001 - a broken stream after the damage: size unknown
                unread = None
        else:
            unread = os.fstat(stream.fileno()).st_size - offset
        return CaptureUnreadable(self.path, offset, unread, reason)

    def batches(self, resume: Resume) -> AsyncIterator[list[bytes]]:
        return self._stream_batches() if self.path.suffix == ".zst" else self._mapped_batches()

    async def _mapped_batches(self) -> AsyncIterator[list[bytes]]:
        """An uncompressed capture, memory-mapped: each frame is sliced out of the page cache
        once (the bytes the decoder needs), with no read buffer to fill and re-join. The size
        is taken at the start: bytes appended later are not read, and the file must not be
        truncated while it is replayed (reading a page past the new end kills the process)."""
        with open_capture(self.path) as raw:
            size = os.fstat(raw.fileno()).st_size
            if size == 0:
                return
            try:
                mapped = mmap.mmap(raw.fileno(), size, access=mmap.ACCESS_READ)
            except OSError:  # a file system that cannot map files: read it as a stream
                async for streamed in self._stream_batches():
                    yield streamed
                return
            with mapped as data:
                pos = 0
                unpack = struct.unpack_from
                limit = MAX_CAPTURE_FRAME  # locals: this loop runs once per frame
                problem = None
                while pos < size and problem is None:
                    frames: list[bytes] = []
                    stop = min(pos + CHUNK, size)
                    while pos < stop:
                        if pos + 4 > size:
                            problem = "the file ends inside a length prefix"
                            break
                        (length,) = unpack("<I", data, pos)
                        end = pos + 4 + length
                        if length > limit:
                            problem = f"length prefix {length} over the {limit}-byte frame limit"
                            break
                        if end > size:
                            problem = "the file ends inside a frame"
                            break
                        frames.append(data[pos + 4 : end])
                        pos = end
                    if frames:
                        yield frames
                    await asyncio.sleep(0)  # let the batch timer and status log run
                if problem is not None:
                    raise CaptureUnreadable(self.path, pos, size - pos, problem)

    async def _stream_batches(self) -> AsyncIterator[list[bytes]]:
        stream = open_capture(self.path)
        try:
            offset = 0  # capture offset of rest[0]: everything before it has been yielded
            rest = b""
            while True:
                chunk = self._read(stream, CHUNK, offset + len(rest))
                if not chunk:
                    break
                buf = rest + chunk if rest else chunk
                frames, pos = split_frames(buf, 0)
                rest = buf[pos:]
                offset += pos
                if frames:
                    yield frames
                if len(rest) >= 4:
                    (length,) = struct.unpack_from("<I", rest)
                    if length > MAX_CAPTURE_FRAME:
                        raise self._unreadable(
                            stream, offset, len(rest),
                            f"length prefix {length} over the {MAX_CAPTURE_FRAME}-byte frame limit",
                        )  # fmt: skip
                    missing = 4 + length - len(rest)
                    if missing > CHUNK:
                        # A frame longer than the next chunk: read the rest of it in one go,
                        # not chunk by chunk re-copying a growing buffer (quadratic).
                        parts = [rest]
                        while missing > 0:
                            part = self._read(stream, missing, offset + len(rest))
                            if not part:
                                break
                            parts.append(part)
                            missing -= len(part)
                        rest = b"".join(parts)
                        if missing == 0:  # whole now (else the file ended: reported below)
                            yield [rest[4:]]
                            offset += len(rest)
                            rest = b""
                await asyncio.sleep(0)  # let the batch timer and status log run
            if rest:
                what = "a frame" if len(rest) >= 4 else "a length prefix"
                raise self._unreadable(stream, offset, len(rest), f"the file ends inside {what}")
        finally:
            stream.close()


# ---- websockets -------------------------------------------------------------------------------


def subscribe_url(base: str, cursor: int | None) -> str:
    """`base` may be a host URL (wss://bsky.network) or the full subscribeRepos URL."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    if not path.endswith("com.atproto.sync.subscribeRepos"):
        path = path + SUBSCRIBE_PATH
    query = urlencode({"cursor": cursor}) if cursor is not None else ""
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


class _WebsocketSource:
    format = "cbor"
    live = True
    ping_interval = 20.0
    ping_timeout = 20.0
    stable_after = 30.0  # a connection that lived this long resets the backoff

    def __init__(self, url: str, *, name: str | None = None, backoff: Backoff | None = None) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("ws", "wss"):
            raise PlyrError(f"{url}: the firehose URL must start with wss:// (or ws:// for local tests)")
        self.url = url
        self.name = name or url.rstrip("/")
        self.backoff = backoff or Backoff()
        self.connected = asyncio.Event()

    def connect_url(self, cursor: int | None) -> str:
        raise NotImplementedError

    async def batches(self, resume: Resume) -> AsyncIterator[list[bytes]]:
        while True:
            url = self.connect_url(resume())
            started = time.monotonic()
            try:
                async with connect(
                    url,
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_timeout,
                    max_size=MAX_MESSAGE,
                    open_timeout=15,
                    close_timeout=2,
                    compression=None,
                    user_agent_header="plyr-indexer",
                ) as ws:
                    log.info("connected", extra={"url": url})
                    self.connected.set()
                    async for message in ws:
                        yield [message]  # type: ignore[list-item]
                    reason = f"closed by server ({ws.close_code})"
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                reason = f"{exc.__class__.__name__}: {exc}"
            finally:
                self.connected.clear()
            if time.monotonic() - started > self.stable_after:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            metrics.RECONNECTS.labels(self.name).inc()
            log.warning(
                "firehose connection lost; reconnecting",
                extra={"url": self.url, "reason": reason, "retry_in_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)


class RelaySource(_WebsocketSource):
    """com.atproto.sync.subscribeRepos on a relay or a PDS, resuming from the cursor."""

    def connect_url(self, cursor: int | None) -> str:
        return subscribe_url(self.url, cursor)


class JetstreamSource(_WebsocketSource):
    """Jetstream JSON (`wantedCollections`: fm.plyr.* and the network plays' collections); the
    cursor is time_us. Jetstream carries no signatures or CAR blocks: nothing can be verified
    (we trust the Jetstream operator)."""

    format = "jetstream"
    rewind_us = 5_000_000  # Jetstream's advice: resume a few seconds early (replays are harmless)

    def connect_url(self, cursor: int | None) -> str:
        parts = urlsplit(self.url)
        params: list[tuple[str, str]] = [("wantedCollections", "fm.plyr.*")]
        params += [("wantedCollections", c) for c in NETWORK_PLAY_COLLECTIONS]
        if cursor is not None:
            params.append(("cursor", str(max(0, cursor - self.rewind_us))))
        return urlunsplit((parts.scheme, parts.netloc, parts.path or "/subscribe", urlencode(params), ""))
