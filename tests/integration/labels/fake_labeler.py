"""A labeler on loopback for tests: a did:plc whose document (served by the PLC stand-in of
tests/unit/protocol/fake_identity_server.py) names an `#atproto_label` key and an
`#atproto_labeler` endpoint, and a real `com.atproto.label.subscribeLabels` WebSocket server
(aiohttp) serving published frames from the requested cursor.

It can misbehave on demand: drop a connection after N frames, send frames first on the next
connection, answer a cursor above its sequence with a FutureCursor error (as Ozone does)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from protocol.crypto import PrivateKey
from protocol.labels import Label, encode_error_frame, encode_labels_frame
from tests.unit.protocol.fake_identity_server import FakeIdentityServer, did_doc, random_plc_did


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeLabeler:
    def __init__(self, plc: FakeIdentityServer, *, did: str | None = None) -> None:
        self.plc = plc
        self.did = did or random_plc_did()
        self.key = PrivateKey.generate()
        self.seq = 0
        self.frames: list[tuple[int, bytes]] = []  # (seq it is sent after, frame)
        self.cursors: list[int | None] = []  # the cursor of each connection, in order
        self.drop_after: list[int] = []  # per next connection: cut it after sending N frames
        self.before: list[list[bytes]] = []  # per next connection: frames sent first
        self.future_cursor_errors = True  # a cursor above our seq: FutureCursor, as Ozone does
        self.open = 0  # connections open now
        self._new = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._clock = datetime.now(UTC) - timedelta(hours=1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def document(self, *, endpoint: str | None = None) -> dict[str, Any]:
        doc = did_doc(self.did, None, pds=None)
        doc["verificationMethod"].append({
            "id": f"{self.did}#atproto_label", "type": "Multikey", "controller": self.did,
            "publicKeyMultibase": self.key.public_key().multibase(),
        })  # fmt: skip
        doc["service"].append(
            {"id": "#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": endpoint or self.endpoint}
        )
        return doc

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.label.subscribeLabels", self._subscribe)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.publish_document()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def publish_document(self, **kw: Any) -> None:
        self.plc.plc[self.did] = self.document(**kw)

    def rotate_key(self) -> PrivateKey:
        """A new label key in the DID document; returns the old one."""
        old, self.key = self.key, PrivateKey.generate()
        self.publish_document()
        return old

    # ---- labels and frames -------------------------------------------------------------------

    def tick(self) -> str:
        """A creation time later than every earlier one (whole milliseconds apart)."""
        self._clock += timedelta(milliseconds=1)
        return iso(self._clock)

    def label(self, uri: str, val: str, *, key: PrivateKey | None = None, **fields: Any) -> Label:
        fields.setdefault("src", self.did)
        fields.setdefault("cts", self.tick())
        return Label(uri=uri, val=val, **fields).signed(key or self.key)

    def emit(self, *labels: Label) -> int:
        """One `#labels` frame at the next seq; returns the seq."""
        self.seq += 1
        self.publish(encode_labels_frame(self.seq, list(labels)), seq=self.seq)
        return self.seq

    def publish(self, frame: bytes, *, seq: int | None = None) -> None:
        """Any frame (malformed ones too), sent to connections whose cursor is below `seq`
        (default: the current seq, i.e. after the frames published so far)."""
        self.frames.append((self.seq if seq is None else seq, frame))
        self._new.set()

    # ---- the stream --------------------------------------------------------------------------

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("cursor")
        cursor = int(raw) if raw is not None else None
        self.cursors.append(cursor)
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.open += 1
        try:
            if cursor is not None and cursor > self.seq and self.future_cursor_errors:
                await ws.send_bytes(encode_error_frame("FutureCursor", "Cursor in the future."))
                await ws.close()
                return ws
            drop = self.drop_after.pop(0) if self.drop_after else None
            for frame in self.before.pop(0) if self.before else []:
                await ws.send_bytes(frame)
            i = 0
            if cursor is not None:
                while i < len(self.frames) and self.frames[i][0] <= cursor:
                    i += 1
            else:
                i = len(self.frames)  # no cursor: live labels only
            sent = 0
            while not ws.closed:
                while i < len(self.frames):
                    if drop is not None and sent >= drop:
                        assert request.transport is not None
                        request.transport.abort()  # cut: no close handshake
                        return ws
                    await ws.send_bytes(self.frames[i][1])
                    i += 1
                    sent += 1
                self._new.clear()
                waiter = asyncio.ensure_future(self._new.wait())
                reader = asyncio.ensure_future(ws.receive())  # ends when the client goes
                done, pending = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                if reader in done:
                    return ws
            return ws
        finally:
            self.open -= 1
