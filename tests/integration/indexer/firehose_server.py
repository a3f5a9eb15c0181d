"""A loopback subscribeRepos server for tests: serves published frames from the requested cursor,
and can misbehave on demand (drop connections, send error frames, go silent)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve


class FirehoseServer:
    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.cursors: list[int | None] = []  # the cursor of each connection, in order
        self.drop_after: list[int] = []  # per next connection: abort after sending N frames
        self.before: list[list[bytes]] = []  # per next connection: frames sent first (e.g. errors)
        self._new = asyncio.Event()
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await serve(self._handler, "127.0.0.1", 0, compression=None, max_size=None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()

    def publish(self, seq: int, frame: bytes) -> None:
        self.frames.append((seq, frame))
        self._new.set()

    async def _handler(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)  # type: ignore[union-attr]
        cursor = int(query["cursor"][0]) if "cursor" in query else None
        self.cursors.append(cursor)
        drop = self.drop_after.pop(0) if self.drop_after else None
        for f in self.before.pop(0) if self.before else []:
            await ws.send(f)
        i = 0
        if cursor is not None:
            while i < len(self.frames) and self.frames[i][0] <= cursor:
                i += 1
        sent = 0
        while True:
            while i < len(self.frames):
                if drop is not None and sent >= drop:
                    ws.transport.abort()  # an abrupt drop, no close handshake
                    return
                await ws.send(self.frames[i][1])
                i += 1
                sent += 1
            self._new.clear()
            waiter = asyncio.ensure_future(self._new.wait())
            closed = asyncio.ensure_future(ws.wait_closed())
            done, pending = await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if closed in done:
                return


class Blackhole:
    """A TCP proxy that can stop forwarding without closing: a half-open connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = False
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if self.silent:
                    continue  # swallow: neither side hears the other any more
                writer.write(data)
                await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        # Cancelled at shutdown: end quietly (asyncio logs a cancelled connection callback).
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
