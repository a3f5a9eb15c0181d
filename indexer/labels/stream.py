"""One `com.atproto.label.subscribeLabels` connection, read in batches.

The WebSocket goes through the runtime's guarded HTTP session (core/net.py: a DID document
naming a private address is refused unless PLYR_ALLOW_PRIVATE_NETWORK). Messages are bounded
(`max_message`); a reader task queues them (a bounded queue) so that the subscriber can take
every message already received as one batch, one transaction. A labeler may be quiet for hours,
so there is no timeout on messages: a dead or half-open connection is noticed by WebSocket
pings (`heartbeat`: no pong within half of it closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

SUBSCRIBE_PATH = "/xrpc/com.atproto.label.subscribeLabels"
MAX_MESSAGE = 1 << 20  # a label is a few hundred bytes; Ozone sends a handful per frame
# A message over MAX_MESSAGE is retried once with this limit (and a short read-ahead queue, so
# that at most OVERSIZED_QUEUE * OVERSIZED_MAX_MESSAGE bytes are held) before it is skipped.
OVERSIZED_MAX_MESSAGE = 16 << 20
OVERSIZED_QUEUE = 8
HEARTBEAT = 30.0
CONNECT_TIMEOUT = 15.0
QUEUE = 512  # messages read ahead of the writer (at most QUEUE * MAX_MESSAGE bytes held)


def subscribe_url(endpoint: str, cursor: int) -> str:
    """The stream URL on a labeler's service endpoint (an http(s) origin, as DID documents
    give it): https -> wss, http -> ws."""
    parts = urlsplit(endpoint)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, SUBSCRIBE_PATH, urlencode({"cursor": cursor}), ""))


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A text WebSocket message: not a frame of this protocol (recorded, then skipped)."""

    text: str


class StreamEnded(Exception):
    """The connection ended (closed by the labeler, a network error, a missed heartbeat).
    `oversized`: we closed it because a message was larger than our limit (close code 1009);
    the messages before it were delivered."""

    def __init__(self, message: str, *, oversized: bool = False) -> None:
        super().__init__(message)
        self.oversized = oversized


Message = bytes | TextMessage


async def _read(ws: aiohttp.ClientWebSocketResponse, queue: asyncio.Queue[Message | StreamEnded]) -> None:
    end: StreamEnded
    try:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                await queue.put(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                await queue.put(TextMessage(msg.data[:200]))
            elif msg.type is aiohttp.WSMsgType.ERROR:
                error = msg.data if isinstance(msg.data, BaseException) else ws.exception()
                too_big = getattr(error, "code", None) == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
                end = StreamEnded(f"connection error: {error!r:.300}", oversized=too_big)
                break
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                end = StreamEnded(f"closed by the labeler (code {ws.close_code})")
                break
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        end = StreamEnded(f"{exc.__class__.__name__}: {exc}")
    await queue.put(end)


@contextlib.asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_message: int = MAX_MESSAGE,
    heartbeat: float = HEARTBEAT,
    connect_timeout: float = CONNECT_TIMEOUT,
    max_batch: int = QUEUE,
) -> AsyncIterator[AsyncIterator[list[Message]]]:
    """Connect to `url`; yields an iterator of batches (every message already received, at
    least one, at most `max_batch`) that raises StreamEnded when the connection ends."""
    async with asyncio.timeout(connect_timeout):
        ws = await session.ws_connect(
            url, heartbeat=heartbeat, max_msg_size=max_message, autoping=True, compress=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
        )  # fmt: skip
    queue: asyncio.Queue[Message | StreamEnded] = asyncio.Queue(maxsize=max_batch)
    reader = asyncio.create_task(_read(ws, queue))

    async def batches() -> AsyncIterator[list[Message]]:
        while True:
            items = [await queue.get()]
            while len(items) < max_batch and not queue.empty():
                items.append(queue.get_nowait())
            ended = next((item for item in items if isinstance(item, StreamEnded)), None)
            messages = [item for item in items if not isinstance(item, StreamEnded)]
            if messages:
                yield messages
            if ended is not None:
                raise ended

    try:
        yield batches()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                await ws.close()
