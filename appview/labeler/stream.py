"""`com.atproto.label.subscribeLabels`: our labels as an event stream (specs/event-stream.md).

Each row of `own_labels` is one `#labels` frame `{seq, labels: [label]}`. A subscriber gives
the seq it last processed as `cursor`: it gets every stored row after it (the whole history
from 0: labels are few and superseded rows are gone, so the backfill window is everything),
then new rows as they commit. Without a cursor it gets only new rows. A cursor ahead of the
stream is answered with a `FutureCursor` error frame, then the connection closes.

One `LabelStream` per process fans new rows out: it wakes on NOTIFY `own_labels` (a dedicated
LISTEN connection, when the app has the primary's URL) and at worst every `poll_seconds`
(LISTEN down, or a notification missed while it reconnects), reads the rows after the last one
it saw once, and offers each encoded frame to every live subscriber's bounded queue. A
subscriber first catches up from the database at its own pace (each send bounded in time),
then joins the fan-out; one whose queue overflows, or whose send stalls, gets a
`ConsumerTooSlow` error frame and is disconnected rather than buffered without end.

seq order is commit order (store.py serialises writers), so reading `seq > last` never skips
a row that commits later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import Counter, Gauge

from appview.errors import XRPCError, invalid_request
from appview.labeler.settings import LabelerSettings
from appview.labeler.store import NOTIFY_CHANNEL, LabelSigner, max_seq, row_label, rows_after
from core import db
from core.backoff import Backoff
from protocol.labels import encode_error_frame, encode_labels_frame

log = logging.getLogger("plyr.appview.labeler")

NSID = "com.atproto.label.subscribeLabels"
PATH = f"/xrpc/{NSID}"
BATCH = 500  # rows read per statement, while catching up and while fanning out
SEND_TIMEOUT = 30.0  # seconds one frame may take to go out before the subscriber is dropped
HEARTBEAT = 30.0  # WebSocket pings: a peer that vanished is noticed within about this
MAX_CLIENT_MESSAGE = 4096  # subscribers have nothing to say (the spec: ignore what they send)
_SEQ_MAX = 2**63 - 1

SUBSCRIBERS = Gauge("plyr_labeler_subscribers", "open subscribeLabels connections")
DROPPED = Counter("plyr_labeler_subscribers_dropped_total", "subscribeLabels connections we closed", ["reason"])


class _TooSlow(Exception):
    """The subscriber fell behind its buffer, or a send stalled."""


@dataclass(eq=False)
class _Subscriber:
    ws: web.WebSocketResponse
    queue: asyncio.Queue[tuple[int, bytes]]
    overflowed: bool = False

    def offer(self, seq: int, frame: bytes) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait((seq, frame))
        except asyncio.QueueFull:
            self.overflowed = True


@dataclass(eq=False)
class LabelStream:
    """The subscribeLabels endpoint of one AppView process (see the module docstring)."""

    pool: Any  # the primary's pool (or FairPool): rows are read where they are written
    signer: LabelSigner
    settings: LabelerSettings
    primary_url: str = ""  # for the LISTEN connection; empty: polling only
    head: int = 0  # the last seq fanned out
    listening: bool = False
    live: set[_Subscriber] = field(default_factory=set)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _start_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _task: asyncio.Task[None] | None = None

    # -- the endpoint -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET"], text=f"{NSID} is a subscription: use GET")
        cursor = _cursor(request)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_CLIENT_MESSAGE)
        if not ws.can_prepare(request).ok:
            raise XRPCError(426, "UpgradeRequired", f"{NSID} is a WebSocket stream: connect with Upgrade: websocket")
        if len(self.sockets) >= self.settings.max_subscribers:
            raise XRPCError(429, "RateLimitExceeded", "too many label subscribers here; try again later")
        self.sockets.add(ws)
        SUBSCRIBERS.inc()
        try:
            await ws.prepare(request)
            await self._serve(ws, cursor)
        finally:
            self.sockets.discard(ws)
            SUBSCRIBERS.dec()
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    async def _serve(self, ws: web.WebSocketResponse, cursor: int | None) -> None:
        sub = _Subscriber(ws, asyncio.Queue(self.settings.send_buffer))
        pump = asyncio.create_task(self._pump(sub, cursor))
        reader = asyncio.create_task(_ignore_client(ws))
        try:
            await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.live.discard(sub)
            for task in (pump, reader):
                task.cancel()
            await asyncio.gather(pump, reader, return_exceptions=True)
        if pump.done() and not pump.cancelled() and (exc := pump.exception()) is not None:
            await self._ended_by(ws, exc)

    async def _ended_by(self, ws: web.WebSocketResponse, exc: BaseException) -> None:
        if isinstance(exc, _TooSlow):
            DROPPED.labels("slow").inc()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await ws.send_bytes(encode_error_frame("ConsumerTooSlow", "subscriber fell too far behind"))
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"ConsumerTooSlow")
        elif isinstance(exc, ConnectionError):
            pass  # the subscriber went away mid-send
        else:
            DROPPED.labels("error").inc()
            log.warning("subscribeLabels connection failed", extra={"error": str(exc)[:300]})
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"InternalServerError")

    async def _pump(self, sub: _Subscriber, cursor: int | None) -> None:
        await self._ensure_running()
        current = await max_seq(self.pool)
        if cursor is not None and cursor > current:
            await _send(sub.ws, encode_error_frame("FutureCursor", f"cursor {cursor} is ahead of the stream ({current})"))
            await sub.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"FutureCursor")
            return
        last = current if cursor is None else cursor
        # Catch up from the database at the subscriber's pace...
        while True:
            rows = await rows_after(self.pool, last, BATCH)
            last = await self._send_rows(sub, rows, last)
            if len(rows) < BATCH:
                break
        # ...then join the fan-out; rows it passed before we joined come from the database.
        self.live.add(sub)
        joined_at = self.head
        while last < joined_at:
            rows = await rows_after(self.pool, last, BATCH, through=joined_at)
            if not rows:
                break
            last = await self._send_rows(sub, rows, last)
        while True:
            seq, frame = await sub.queue.get()
            if sub.overflowed:
                raise _TooSlow()
            if seq > last:
                await _send(sub.ws, frame)
                last = seq

    async def _send_rows(self, sub: _Subscriber, rows: list[Any], last: int) -> int:
        for row in rows:
            await _send(sub.ws, encode_labels_frame(row["seq"], [row_label(self.signer, row)]))
            last = row["seq"]
        return last

    # -- the fan-out --------------------------------------------------------------------------

    async def _ensure_running(self) -> None:
        async with self._start_lock:
            if self._task is None:
                self.head = await max_seq(self.pool)
                self._task = asyncio.create_task(self._run(), name="labeler-fanout")

    async def _run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="labeler-listen") if self.primary_url else None
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_seconds):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    await self._fan_out()
                except Exception as exc:  # the database away for a moment: the next round retries
                    log.warning("subscribeLabels could not read new labels", extra={"error": str(exc)[:300]})
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _fan_out(self) -> None:
        while True:
            rows = await rows_after(self.pool, self.head, BATCH)
            for row in rows:
                frame = encode_labels_frame(row["seq"], [row_label(self.signer, row)])
                for sub in list(self.live):
                    sub.offer(row["seq"], frame)
                self.head = row["seq"]
            if len(rows) < BATCH:
                return

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        backoff = Backoff(base=self.settings.poll_seconds, cap=60.0)
        while True:
            try:
                conn = await db.connect(self.primary_url)
                try:
                    await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                    self.listening = True
                    backoff.reset()
                    self._wake.set()  # anything committed while we were not listening
                    while not conn.is_closed():
                        await asyncio.sleep(HEARTBEAT)
                        await conn.execute("SELECT 1")  # notices a dead connection
                finally:
                    self.listening = False
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("labels LISTEN connection down; polling", extra={"error": str(exc)[:300]})
            await asyncio.sleep(backoff.next_delay())

    # -- app lifecycle ------------------------------------------------------------------------

    async def shutdown(self, _app: web.Application | None = None) -> None:
        """Close every subscriber (going away): long-lived sockets would hold the shutdown."""
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in list(self.sockets)),
            return_exceptions=True,
        )

    async def stop(self, _app: web.Application | None = None) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def _cursor(request: web.Request) -> int | None:
    values = request.query.getall("cursor", [])
    if not values:
        return None
    text = values[0]
    if len(values) > 1 or not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > _SEQ_MAX:
        raise invalid_request("cursor must be one non-negative integer")
    return int(text)


async def _send(ws: web.WebSocketResponse, frame: bytes) -> None:
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            await ws.send_bytes(frame)
    except TimeoutError:
        raise _TooSlow() from None


async def _ignore_client(ws: web.WebSocketResponse) -> None:
    """Read (and drop) what the subscriber sends: reading is what answers its pings and sees
    its close. Returns when the connection ends."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
