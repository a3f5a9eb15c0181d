"""The AppView aiohttp application: XRPC, web pages, OpenAPI, health and metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from appview import erasure, front_door, openapi, web_pages
from appview.auth import SERVICE_FRAGMENT, Authenticator
from appview.context import AppState, Route
from appview.freshness import Freshness
from appview.http import (
    RETRY_AFTER,
    add_security_headers,
    cors_middleware,
    database_unavailable,
    errors_middleware,
)
from appview.labeler import query as labeler_query
from appview.labeler.store import LabelSigner
from appview.labeler.stream import PATH as SUBSCRIBE_LABELS_PATH
from appview.labeler.stream import LabelStream
from appview.methods import actor, feed, graph, plays, search, stats, viewer
from appview.moderation import methods as moderation
from appview.moderation.signer import signer_from_settings
from appview.replicas import ReadRouter, Target
from appview.settings import AppviewSettings
from appview.xrpc import XrpcEndpoint
from appview.xrpc_schema import LexiconSet
from core.didweb import add_did_json_route
from core.metrics import metrics_handler
from core.ratelimit import RequestLimits
from protocol.identity import IdentityResolving

log = logging.getLogger("plyr.appview")

ROUTES: dict[str, Route] = {
    **feed.ROUTES,
    **actor.ROUTES,
    **graph.ROUTES,
    **search.ROUTES,
    **stats.ROUTES,
    **plays.ROUTES,
    **viewer.ROUTES,
    **moderation.ROUTES,
    **erasure.ROUTES,
}

STATE_KEY = web.AppKey("state", AppState)
XRPC_KEY = web.AppKey("xrpc", XrpcEndpoint)
LIMITS_KEY = web.AppKey("limits", RequestLimits)
READ_ROUTER_KEY = web.AppKey("read_router", ReadRouter)
SERVICE_TYPE = "PlyrAppView"  # the `type` of our service entry in the DID document
LABEL_KEY_FRAGMENT = "atproto_label"  # our labeler's key and service (specs/label.md)
LABELER_SERVICE = ("atproto_labeler", "AtprotoLabeler")
LABEL_STREAM_KEY = web.AppKey("label_stream", LabelStream)


def build_app(
    pool: asyncpg.Pool,
    settings: AppviewSettings,
    *,
    resolver: IdentityResolving,
    lexicons: LexiconSet | None = None,
    check_output: bool = False,
    limits_clock: Callable[[], float] | None = None,
    replicas: Sequence[tuple[str, Any]] = (),
    primary_url: str = "",
    label_signer: LabelSigner | None = None,
) -> web.Application:
    """`pool` is the primary's. `resolver`: the process's identity resolver (checks service-auth
    tokens; the caller closes it). `check_output` validates every response against its lexicon
    (tests turn it on); `limits_clock` is the rate limiter's wall clock (tests move it).
    `replicas`: (name, pool) of each read replica, with `primary_url` for the read-your-writes
    listener (see replicas.py). `label_signer`: our labeler's key, which moderation signs with
    (default: from the settings; none configured, the moderation methods that label answer 503)."""
    lexicons = lexicons or LexiconSet.load()
    signer = label_signer or signer_from_settings(settings)
    # Our labeler's methods exist only when it has a key (appview/labeler/__init__.py).
    routes = {**ROUTES, **(labeler_query.ROUTES if signer is not None else {})}
    freshness = Freshness(pool, settings.freshness_interval)
    router = ReadRouter(
        Target("primary", pool, freshness),
        [Target(name, replica, Freshness(replica, settings.freshness_interval)) for name, replica in replicas],
        primary_url=primary_url,
        max_lag=settings.replica_max_lag,
        read_your_writes=settings.read_your_writes_seconds,
        check_interval=settings.freshness_interval,
        # a viewer's own private state (queue, preferences) and the writes: always the primary
        primary_only={nsid for nsid, route in ROUTES.items() if route.auth == "required"},
    )
    # Without replicas, handlers get the pool itself: no routing layer on any statement.
    state = AppState(settings=settings, pool=router if replicas else pool, labeler=signer)  # type: ignore[arg-type]
    endpoint = XrpcEndpoint(
        lexicons,
        routes,
        state,
        Authenticator(settings.service_did, resolver, other_audiences=moderation.OTHER_AUDIENCES),
        check_output=check_output,
    )
    limits = RequestLimits(settings.rate_limit, pool, "appview", clock=limits_clock or time.time)
    app = web.Application(
        # Limits inside CORS (a browser can read its 429), outside the error JSON (it sees
        # every answer, to charge a request whose token failed to its address).
        # The read route innermost: it sees a failed replica's error before it becomes a 503.
        middlewares=[cors_middleware(settings.cors_origins), limits.middleware, errors_middleware]
        + ([router.middleware] if replicas else []),
        client_max_size=settings.max_body_bytes,
    )
    app[STATE_KEY] = state
    app[XRPC_KEY] = endpoint
    app[LIMITS_KEY] = limits
    app[READ_ROUTER_KEY] = router
    limits.install(app)
    # Our did:web document: the service entry a PDS resolves to proxy `atproto-proxy:
    # <did>#plyr_appview` calls here, and, with a labeler key, the label key and the labeler
    # endpoint consumers subscribe to (none for a did:plc: the PLC directory publishes it).
    services = [(SERVICE_FRAGMENT[1:], SERVICE_TYPE, settings.public_url)]
    keys: list[tuple[str, str]] = []
    if signer is not None:
        services.append((*LABELER_SERVICE, settings.public_url))
        keys.append((LABEL_KEY_FRAGMENT, signer.public_multibase))
    add_did_json_route(app, settings.service_did, services, keys)

    async def health(_request: web.Request) -> web.Response:
        try:
            await pool.fetchval("SELECT 1")
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # Nothing about the database in the body: its error text names hosts and databases.
            log.warning("health: database unavailable", extra={"error": str(exc)[:300]})
            return web.Response(status=503, body=b'{"status":"unavailable"}', content_type="application/json",
                                headers={"Cache-Control": "no-store", "Retry-After": RETRY_AFTER})
        body = {"status": "ok", "indexEventTime": freshness.headers()["Plyr-Index-Event-Time"]}
        return web.Response(body=orjson.dumps(body), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    subscriptions = [SUBSCRIBE_LABELS_PATH.removeprefix("/xrpc/")] if signer is not None else []
    spec = orjson.dumps(openapi.build(lexicons, routes, settings.public_url, subscriptions=subscriptions))

    async def openapi_json(_request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json",
                            headers={"Cache-Control": "public, max-age=300"})

    if signer is not None:
        # A WebSocket, not a JSON method: its own route, ahead of the XRPC dispatch.
        stream = LabelStream(pool, signer, settings.labeler, primary_url=primary_url)
        app[LABEL_STREAM_KEY] = stream
        app.router.add_route("*", SUBSCRIBE_LABELS_PATH, stream.handle)
        app.on_shutdown.append(stream.shutdown)
        app.on_cleanup.append(stream.stop)
    app.router.add_route("*", "/xrpc/{nsid}", endpoint.handle)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/openapi.json", openapi_json)
    web_pages.add_routes(app, state)
    front_door.add_routes(app, state, lexicons, ROUTES)

    async def on_startup(_app: web.Application) -> None:
        await router.start()

    async def on_cleanup(_app: web.Application) -> None:
        await router.stop()
        await state.views.close()
        if state.likes is not None:
            await state.likes.close()

    async def add_freshness(request: web.Request, response: web.StreamResponse) -> None:
        # Every XRPC response, errors and 304s included, says how fresh the index it was read
        # from is (a replica's copy when a replica answered).
        if request.path.startswith("/xrpc/"):
            response.headers.update(router.target_of(request).freshness.headers())

    app.on_response_prepare.append(add_freshness)
    app.on_response_prepare.append(add_security_headers)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
