"""The `/xrpc/{nsid}` endpoint: find the method, check HTTP method, params, body and auth
against its lexicon, run the handler, and answer JSON with cache headers (the
freshness header is added to every /xrpc/ response by the app, see app.py).

Anonymous GETs are public: they carry an ETag (304 on If-None-Match) and Cache-Control, and a
response may be reused for `microcache_seconds` (one database trip per URL and set of labelers
per interval however many clients ask); with it off, identical requests arriving while one is
answered share that answer (coalescing). An authenticated read of tracks is that same public
answer plus the viewer's own state (their likes, the labels they hide) from one more query; it
is private and never cached.

Queries negotiate labelers (appview/labels.py): `atproto-accept-labelers` in, bad syntax a 400;
`atproto-content-labelers` out; public answers vary on the header. What is cached is the
handler's shared result (every labeler's labels); each answer is `labels.finish`ed from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import brotli
import orjson
from aiohttp import web
from prometheus_client import Counter, Histogram

from appview.auth import Authenticator
from appview.caches import TtlCache
from appview.client_json import client_json_problem
from appview.context import AppState, Call, Route
from appview.errors import XRPCError, invalid_request
from appview.http import database_unavailable, etag_of, not_modified
from appview.labels import (
    DEFAULT_HIDDEN_LABELS,
    RequestLabels,
    finish,
    header_values,
    negotiate,
    track_uris,
)
from appview.xrpc_schema import LexiconSet, Method
from core.ratelimit import charge_did
from protocol.labels import ACCEPT_LABELERS_HEADER, CONTENT_LABELERS_HEADER

log = logging.getLogger("plyr.appview")

REQUESTS = Counter("plyr_appview_xrpc_requests_total", "XRPC requests", ["method", "status"])
LATENCY = Histogram(
    "plyr_appview_xrpc_seconds",
    "XRPC handling time",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

COMPRESS_ABOVE = 1024  # bytes; smaller bodies are not worth the CPU
# The viewer's repo rev as indexed, on responses to an authenticated viewer: a PDS proxying the
# call can add the viewer's own writes newer than it (read-after-write, as the Bluesky AppView).
REPO_REV_HEADER = "atproto-repo-rev"
# Public answers differ by viewer (none), encoding and the labelers asked for.
PUBLIC_VARY = f"Authorization, Accept-Encoding, {ACCEPT_LABELERS_HEADER}"


class XrpcEndpoint:
    def __init__(
        self,
        lexicons: LexiconSet,
        routes: dict[str, Route],
        state: AppState,
        auth: Authenticator,
        *,
        check_output: bool = False,
    ) -> None:
        missing = set(routes) - set(lexicons.methods)
        if missing:
            raise RuntimeError(f"routes without a lexicon: {sorted(missing)}")
        self.lexicons = lexicons
        self.routes = routes
        self.state = state
        self.auth = auth
        self.check_output = check_output
        # ~1,000 URLs of at most a few tens of KB each: bounded memory whatever the traffic.
        self.microcache = TtlCache(max_entries=1024)
        self.public_cache_control = (
            f"public, max-age={state.settings.public_max_age}, stale-while-revalidate=30"
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        nsid = request.match_info["nsid"]
        route = self.routes.get(nsid)
        method = self.lexicons.methods.get(nsid)
        if route is None or method is None:
            REQUESTS.labels("unknown", "404").inc()
            raise XRPCError(404, "MethodNotImplemented", f"method not implemented: {nsid[:100]}")
        started = time.perf_counter()
        status = 500
        try:
            response = await self._handle(request, nsid, method, route)
            status = response.status
            return response
        except XRPCError as exc:
            status = exc.status
            raise
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception as exc:
            status = 503 if database_unavailable(exc) else 500  # as errors_middleware answers
            raise
        finally:
            REQUESTS.labels(nsid, str(status)).inc()
            LATENCY.labels(nsid).observe(time.perf_counter() - started)

    async def _handle(
        self, request: web.Request, nsid: str, method: Method, route: Route
    ) -> web.StreamResponse:
        verb = request.method
        allowed = ("GET", "HEAD") if method.kind == "query" else ("POST",)
        if verb not in allowed:
            raise web.HTTPMethodNotAllowed(verb, allowed, text=f"{nsid} is a {method.kind}: use {allowed[0]}")

        labels = None
        if method.kind == "query":
            labels = negotiate(header_values(request.headers), self.state.settings.labels)  # 400 when bad
            if route.auth == "none" or (route.auth == "optional" and "Authorization" not in request.headers):
                return await self._public(request, nsid, method, route, labels)

        params = self._params(method, request)
        # Who calls before what they send: an anonymous caller's body is never parsed.
        viewer = await self.auth.viewer(request, nsid, required=route.auth == "required")
        if viewer is not None:
            verdict = charge_did(request, viewer)  # a verified caller spends its own budget
            if verdict is not None and not verdict.allowed:
                raise XRPCError(429, "RateLimitExceeded",
                                f"rate limit exceeded: {verdict.limit} requests per {verdict.window} s per account")
        if labels is not None and route.auth == "optional" and viewer is not None:
            return await self._with_viewer(request, nsid, method, route, viewer, labels)
        # Read-after-write: the viewer's indexed rev, looked up while the handler runs (one
        # statement shared with concurrent requests, see hydrate.ViewerLikes).
        rev_lookup = (
            asyncio.ensure_future(self.state.likes.lookup(viewer, []))
            if viewer is not None and self.state.likes is not None else None
        )
        try:
            body: Any = None
            if method.kind == "procedure":
                body = await self._read_body(request, nsid, method)
            result = await route.handler(Call(self.state, params, body, viewer))
            if labels is not None:  # a query: any views in it as for every request
                result = finish(result, labels, frozenset())
            payload = self._encode(nsid, method, result)
            rev = (await rev_lookup).rev if rev_lookup is not None else None
        finally:
            if rev_lookup is not None and not rev_lookup.done():
                rev_lookup.cancel()
        response = web.Response(body=payload, content_type="application/json")
        response.headers["Cache-Control"] = "private, no-store"
        if rev is not None:
            response.headers[REPO_REV_HEADER] = rev
        if labels is not None:
            response.headers[CONTENT_LABELERS_HEADER] = labels.header
        self._maybe_compress(request, response, len(payload))
        return response

    def _params(self, method: Method, request: web.Request) -> dict[str, Any]:
        if "\x00" in request.query_string or "%00" in request.raw_path:
            # Postgres text cannot hold NUL: refuse it here rather than fail in a query.
            raise invalid_request("parameters must not contain NUL characters")
        params, problems = self.lexicons.coerce_params(method, request.query)
        if problems:
            raise invalid_request("; ".join(problems[:5]))
        return params

    def _public_loader(
        self, request: web.Request, nsid: str, method: Method, route: Route, labels: RequestLabels
    ) -> Callable[[], Awaitable[tuple[bytes, str, dict[str, Any]]]]:
        # The same URL and labelers get the same anonymous answer: a cached one skips validation
        # too. The handler's shared result (every labeler's labels, nothing hidden) travels
        # with the anonymous bytes (read-only: shared) for viewer reads to build on.
        async def load() -> tuple[bytes, str, dict[str, Any]]:
            params = self._params(method, request)
            result = await route.handler(Call(self.state, params, None, None))
            payload = self._encode(nsid, method, finish(result, labels, DEFAULT_HIDDEN_LABELS))
            return payload, etag_of(payload), result

        return load

    async def _public(
        self, request: web.Request, nsid: str, method: Method, route: Route, labels: RequestLabels
    ) -> web.StreamResponse:
        payload, etag, _result = await self._public_payload(request, nsid, method, route, labels)
        headers = {
            "ETag": etag,
            "Cache-Control": self.public_cache_control,
            "Vary": PUBLIC_VARY,
            CONTENT_LABELERS_HEADER: labels.header,
        }
        if not_modified(request, etag):
            return web.Response(status=304, headers=headers)
        response = web.Response(body=payload, content_type="application/json", headers=headers)
        self._maybe_compress(request, response, len(payload))
        return response

    async def _public_payload(
        self, request: web.Request, nsid: str, method: Method, route: Route, labels: RequestLabels
    ) -> tuple[bytes, str, dict[str, Any]]:
        """The anonymous answer to this URL and these labelers: from the microcache when on
        (never older than microcache_seconds: a takedown shows within that); otherwise
        computed, shared only by identical requests arriving while it is being computed
        (coalescing: the answer is never older than the request that started it, a few ms at
        most)."""
        loader = self._public_loader(request, nsid, method, route, labels)
        settings = self.state.settings
        key = (request.path_qs, labels.header)
        if settings.microcache_seconds <= 0 and settings.coalesce:
            answer: tuple[bytes, str, dict[str, Any]] = await self.microcache.coalesce(key, loader)
            return answer
        return await self.microcache.get(key, settings.microcache_seconds, loader)

    async def _with_viewer(
        self, request: web.Request, nsid: str, method: Method, route: Route, viewer: str, labels: RequestLabels
    ) -> web.StreamResponse:
        """An authenticated read = the public shared result (microcached) finished for this
        viewer: their likes on its tracks, their repo rev and the labels they hide, from one
        small query shared with concurrent viewers."""
        _payload, _etag, shared = await self._public_payload(request, nsid, method, route, labels)
        assert self.state.likes is not None  # AppState always sets it
        state = await self.state.likes.lookup(viewer, track_uris(shared))
        result = finish(shared, labels, state.hidden, liked=state.liked)  # copies: shared stays
        body = self._encode(nsid, method, result)
        response = web.Response(body=body, content_type="application/json")
        response.headers["Cache-Control"] = "private, no-store"
        response.headers[CONTENT_LABELERS_HEADER] = labels.header
        if state.rev is not None:
            response.headers[REPO_REV_HEADER] = state.rev
        self._maybe_compress(request, response, len(body))
        return response

    async def _read_body(self, request: web.Request, nsid: str, method: Method) -> Any:
        content_type = request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise invalid_request(f"{nsid} takes an application/json body")
        raw = await request.read()  # limited by client_max_size: larger bodies are a 413
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise invalid_request("the body is not valid JSON") from None
        # Depth, size and NUL at every level, before the schema check walks it.
        problem = client_json_problem(body)
        if problem is not None:
            raise invalid_request(problem)
        schema = (method.input or {}).get("schema")
        if schema is not None:
            problems = self.lexicons.check_input(method, body)
            if problems:
                raise invalid_request("; ".join(problems[:5]))
        return body

    def _encode(self, nsid: str, method: Method, result: dict[str, Any]) -> bytes:
        if self.check_output and method.output and method.output.get("schema"):
            problems = self.lexicons.check_output(method, result)
            if problems:
                raise RuntimeError(f"{nsid} produced an invalid output: {problems[:5]}")
        return orjson.dumps(result)

    @staticmethod
    def _maybe_compress(request: web.Request, response: web.Response, size: int) -> None:
        if size <= COMPRESS_ABOVE:
            return
        accepted = accepted_encodings(request.headers.get("Accept-Encoding", ""))
        if "br" in accepted and isinstance(response.body, bytes):
            # aiohttp's server compresses only with gzip/deflate: brotli is applied here.
            # Quality 5 keeps most of br's gain over gzip at a few hundred microseconds a page.
            response.body = brotli.compress(response.body, quality=5)
            response.headers["Content-Encoding"] = "br"
        elif "gzip" in accepted:
            response.enable_compression(web.ContentCoding.gzip)


def accepted_encodings(header: str) -> set[str]:
    """Content codings an Accept-Encoding header allows (those with q=0 are refused)."""
    accepted: set[str] = set()
    for item in header.lower().split(","):
        coding, _, params = item.strip().partition(";")
        q = params.strip()
        if q.startswith("q="):
            try:
                if float(q[2:]) <= 0:
                    continue
            except ValueError:
                continue
        if coding:
            accepted.add(coding.strip())
    return accepted

