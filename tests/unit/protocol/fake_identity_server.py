"""A small HTTP server on 127.0.0.1 playing a PLC directory, a did:web host and a PDS's
resolveHandle, for identity and service-auth tests. Behaviour per DID is scriptable
(slow, huge, failing), and every request is counted so tests can see caching and coalescing.
"""

from __future__ import annotations

import asyncio
import random
import string
from collections import Counter
from typing import Any

from aiohttp import web

from protocol.crypto import PublicKey


def random_plc_did() -> str:
    return "did:plc:" + "".join(random.choices(string.ascii_lowercase + "234567", k=24))


def did_doc(
    did: str,
    key: PublicKey | None,
    *,
    handle: str | None = None,
    pds: str | None = "https://pds.example.com",
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "alsoKnownAs": [f"at://{handle}"] if handle else [],
        "verificationMethod": [],
        "service": [],
    }
    if key is not None:
        doc["verificationMethod"].append(
            {
                "id": f"{did}#atproto",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": key.multibase(),
            }
        )
    if pds is not None:
        doc["service"].append(
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds}
        )
    return doc


class FakeIdentityServer:
    def __init__(self) -> None:
        self.plc: dict[str, Any] = {}  # did -> document (or raw bytes to send as is)
        self.web_doc: Any = None  # served at /.well-known/did.json
        self.handles: dict[str, str] = {}  # handle -> did, for resolveHandle
        self.slow: dict[str, float] = {}  # did -> seconds to wait before answering
        self.huge: set[str] = set()  # dids whose answer is an endless stream
        self.status: dict[str, int] = {}  # did -> forced HTTP status
        self.requests: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def web_did(self) -> str:
        return f"did:web:localhost%3A{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/did.json", self._well_known)
        app.router.add_get("/xrpc/com.atproto.identity.resolveHandle", self._resolve_handle)
        app.router.add_get("/{did}", self._plc)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _plc(self, request: web.Request) -> web.StreamResponse:
        did = request.match_info["did"]
        self.requests[did] += 1
        if did in self.slow:
            await asyncio.sleep(self.slow[did])
        if did in self.status:
            return web.json_response({"message": "forced"}, status=self.status[did])
        if did in self.huge:
            # No Content-Length: the client has to stop reading by itself.
            resp = web.StreamResponse()
            resp.content_type = "application/json"
            await resp.prepare(request)
            try:
                await resp.write(b'{"id": "' + b"x" * 10_000)
                for _ in range(10_000):
                    await resp.write(b"x" * 65536)
            except (ConnectionResetError, RuntimeError):
                pass
            return resp
        doc = self.plc.get(did)
        if doc is None:
            return web.json_response({"message": f"DID not registered: {did}"}, status=404)
        if isinstance(doc, bytes):
            return web.Response(body=doc, content_type="application/json")
        return web.json_response(doc)

    async def _well_known(self, request: web.Request) -> web.Response:
        self.requests["web"] += 1
        if self.web_doc is None:
            return web.Response(status=404)
        return web.json_response(self.web_doc)

    async def _resolve_handle(self, request: web.Request) -> web.Response:
        handle = request.query.get("handle", "")
        self.requests["handle:" + handle] += 1
        did = self.handles.get(handle)
        if did is None:
            return web.json_response(
                {"error": "InvalidRequest", "message": "Unable to resolve handle"}, status=400
            )
        return web.json_response({"did": did})
