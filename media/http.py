"""The media HTTP app: uploads, job status (JSON and Server-Sent Events), exports, object serving.

    POST /upload/audio[?title=&artist=&cover=SHA256]   body: the file (raw, or multipart field "file")
    POST /upload/image
    GET  /jobs/{id}              the job as JSON (its owner, an uploader it was handed to, or trusted)
    GET  /jobs/{id}/events       the job's progress as Server-Sent Events, until it ends (same auth)
    POST /exports[?did=]         queue a zip of the caller's tracks; GET /exports/{id}/download
    GET  /media/{key}            stored objects (local backend: Range, ETag, caching; S3: redirect)
    DELETE /media/{sha256}       the uploader deletes our copy (media/http_delete.py)
    GET  /health, /metrics

Every error is a JSON body {"error", "message"}: 4xx for what a client can cause, 503 with
Retry-After when the database or the machine (disk, memory) is not available now, and a bare
500 InternalServerError for anything unexpected (the details go to the log only).

This module assembles the app (middlewares, routes) and serves stored objects; the upload
routes are in media/http_uploads.py, the job and export routes in media/http_jobs.py, what
they share in media/http_common.py.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from core import ratelimit
from core.db import is_unavailable
from core.didweb import add_did_json_route
from core.metrics import metrics_handler
from media.auth import SERVICE_FRAGMENT, Authenticator
from media.errors import describe, exhausted_errno
from media.events import JobEvents
from media.http_common import (
    AUTH,
    CTX,
    ERROR_NAMES,
    EVENTS,
    LIMITS,
    error_response,
    exhausted_name,
    json_response,
    unavailable_response,
)
from media.http_delete import delete_media
from media.http_jobs import create_export, download_export, get_job, job_events
from media.http_uploads import UPLOAD_SLOTS, UploadSlots, upload_audio, upload_image
from media.ingest import MediaContext
from media.storage import LocalStorage, valid_key

log = logging.getLogger("plyr.media.http")

_HTTP_NAMES = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure leaves as JSON: aiohttp's own text errors, an unavailable database or a
    full disk (503 + Retry-After), and anything unexpected (500, details in the log only)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        name = _HTTP_NAMES.get(exc.status) or ERROR_NAMES.get(exc.status) or "Error"
        return error_response(exc.status, name, exc.reason)
    except Exception as exc:
        # Resource exhaustion first: an OSError(ENOSPC) would also pass for "database unavailable".
        if (err := exhausted_errno(exc)) is not None:
            log.error("out of resources", extra={"path": request.path, "error": describe(err)})
            return unavailable_response(exhausted_name(err), f"{describe(err)}; try again later")
        if is_unavailable(exc):
            # The message can name hosts and databases: the log has it, the client does not.
            log.warning("database unavailable", extra={"path": request.path, "error": repr(exc)})
            return unavailable_response("DatabaseUnavailable", "the database is unavailable; try again later")
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        resp = json_response({"error": "InternalServerError", "message": "an unexpected error occurred"}, 500)
        resp.force_close()
        return resp


async def serve_media(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    key = request.match_info["key"]
    # Exports are private: they are only reachable through /exports/{id}/download.
    if not valid_key(key) or key.startswith("exports/"):
        return error_response(404, "NotFound", "no such object")
    redirect = await ctx.storage.download_url(key)
    if redirect is not None:
        raise web.HTTPFound(redirect, headers={"Cache-Control": "no-store"})
    assert isinstance(ctx.storage, LocalStorage)
    path = ctx.storage.path(key)
    if not path.is_file():
        return error_response(404, "NotFound", "no such object")
    # Keys name content (sha-256), so an object never changes: cache it for good.
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=31536000, immutable"})


async def health(request: web.Request) -> web.Response:
    async with request.app[CTX].pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
    return json_response({"ok": True})


def create_app(
    ctx: MediaContext, auth: Authenticator, events: JobEvents, *, limits_clock: Callable[[], float] = time.time
) -> web.Application:
    limits = ratelimit.RequestLimits(
        ctx.settings.rate_limit if ctx is not None else ratelimit.RateLimitSettings(enabled=False),
        ctx.pool if ctx is not None else None, "media", clock=limits_clock,
    )
    # Limits outside the error JSON: they see every answer (a failed token is charged to its address).
    app = web.Application(middlewares=[limits.middleware, json_errors])
    app[LIMITS] = limits
    limits.install(app)
    if ctx is not None and ctx.settings.service_did is not None:
        # Our own did:web document (its host is checked against PLYR_MEDIA_PUBLIC_URL at start).
        add_did_json_route(app, ctx.settings.service_did.split("#")[0],
                           [(SERVICE_FRAGMENT[1:], "PlyrMedia", ctx.settings.public_url)])
    app[CTX] = ctx
    app[AUTH] = auth
    app[EVENTS] = events
    if ctx is not None:
        app[UPLOAD_SLOTS] = UploadSlots(ctx.settings.uploads_per_caller, ctx.settings.uploads_max)
    app.router.add_post("/upload/audio", upload_audio)
    app.router.add_post("/upload/image", upload_image)
    app.router.add_get("/jobs/{id}", get_job)
    app.router.add_get("/jobs/{id}/events", job_events)
    app.router.add_post("/exports", create_export)
    app.router.add_get("/exports/{id}/download", download_export)
    app.router.add_get("/media/{key:.+}", serve_media)
    app.router.add_delete("/media/{sha256}", delete_media)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> Any:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield runner
    finally:
        await runner.cleanup()
