"""The media HTTP app: uploads, job status (JSON and Server-Sent Events), exports, object serving.

    POST /upload/audio[?title=&artist=&cover=SHA256]   body: the file (raw, or multipart field "file")
    POST /upload/image
    GET  /jobs/{id}              the job as JSON (its owner, an uploader it was handed to, or trusted)
    GET  /jobs/{id}/events       the job's progress as Server-Sent Events, until it ends (same auth)
    POST /exports[?did=]         queue a zip of the caller's tracks; GET /exports/{id}/download
    GET  /media/{key}            stored objects (local backend: Range, ETag, caching; S3: redirect)
    GET  /health, /metrics

Every error is a JSON body {"error", "message"}: 4xx for what a client can cause, 503 with
Retry-After when the database or the machine (disk, memory) is not available now, and a bare
500 InternalServerError for anything unexpected (the details go to the log only).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import BodyPartReader, web
from prometheus_client import Counter, Gauge

from core import ratelimit
from core.db import is_unavailable
from core.didweb import add_did_json_route
from core.metrics import metrics_handler
from media import jobs
from media.auth import (
    JOB_READ_LXMS,
    LXM_CREATE_EXPORT,
    LXM_GET_EXPORT,
    LXM_UPLOAD_AUDIO,
    LXM_UPLOAD_IMAGE,
    SERVICE_FRAGMENT,
    Authenticator,
    Caller,
    Unauthorized,
    is_did,
)
from media.errors import RETRY_AFTER_S, describe, exhausted_errno
from media.events import JobEvents
from media.exports import content_state, reusable_export
from media.ingest import BadMedia, MediaContext, ingest_audio, ingest_image
from media.receive import Received, TooLarge, UploadTimeout, receive
from media.storage import LocalStorage, StorageError, valid_key

log = logging.getLogger("plyr.media.http")

UPLOADS = Counter("plyr_media_uploads_total", "Uploads by kind and outcome", ["kind", "outcome"])
UPLOADS_IN_FLIGHT = Gauge("plyr_media_uploads_in_flight", "Uploads being received or ingested now")
UPLOAD_RETRY_AFTER_S = 5
TERMINAL = ("done", "failed")
READ_PIECE = 1024 * 1024
_SHA = frozenset("0123456789abcdef")

class UploadSlots:
    """In-flight uploads of this process, per caller and in all: each holds a connection and a
    temp file, so a few callers (or many) must not hold them all. One event loop: no lock."""

    def __init__(self, per_caller: int, total: int) -> None:
        self.per_caller = per_caller
        self.limit = total
        self.total = 0
        self.by_caller: dict[str, int] = {}

    def acquire(self, who: str) -> bool:
        held = self.by_caller.get(who, 0)
        if held >= self.per_caller or self.total >= self.limit:
            return False
        self.by_caller[who] = held + 1
        self.total += 1
        UPLOADS_IN_FLIGHT.inc()
        return True

    def release(self, who: str) -> None:
        held = self.by_caller.get(who, 0) - 1
        if held > 0:
            self.by_caller[who] = held
        else:
            self.by_caller.pop(who, None)
        self.total -= 1
        UPLOADS_IN_FLIGHT.dec()


CTX = web.AppKey("media_ctx", MediaContext)
AUTH = web.AppKey("media_auth", Authenticator)
EVENTS = web.AppKey("media_events", JobEvents)
UPLOAD_SLOTS = web.AppKey("media_upload_slots", UploadSlots)
LIMITS = web.AppKey("media_limits", ratelimit.RequestLimits)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, error: str, message: str) -> web.Response:
    return _json({"error": error, "message": message}, status=status)


_ERROR_NAMES = {400: "InvalidRequest", 413: "PayloadTooLarge", 415: "UnsupportedMediaType", 422: "InvalidMedia"}
_HTTP_NAMES = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}
MAX_TEXT_PARAM = 1000  # characters of ?title= / ?artist=


def _exhausted_name(err: int) -> str:
    return "InsufficientStorage" if err in (errno.ENOSPC, errno.EDQUOT) else "ResourceExhausted"


def _unavailable(error: str, message: str) -> web.Response:
    resp = _error(503, error, message)
    resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    resp.force_close()  # the request body may be unread: do not parse it as the next request
    return resp


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
        name = _HTTP_NAMES.get(exc.status) or _ERROR_NAMES.get(exc.status) or "Error"
        return _error(exc.status, name, exc.reason)
    except Exception as exc:
        # Resource exhaustion first: an OSError(ENOSPC) would also pass for "database unavailable".
        if (err := exhausted_errno(exc)) is not None:
            log.error("out of resources", extra={"path": request.path, "error": describe(err)})
            return _unavailable(_exhausted_name(err), f"{describe(err)}; try again later")
        if is_unavailable(exc):
            # The message can name hosts and databases: the log has it, the client does not.
            log.warning("database unavailable", extra={"path": request.path, "error": repr(exc)})
            return _unavailable("DatabaseUnavailable", "the database is unavailable; try again later")
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        resp = _json({"error": "InternalServerError", "message": "an unexpected error occurred"}, 500)
        resp.force_close()
        return resp


def _text_param(request: web.Request, name: str) -> str | None:
    """A free-text query parameter (title, artist): no control characters (a NUL cannot be
    stored in Postgres nor passed to ffmpeg), bounded length."""
    value = request.query.get(name) or None
    if value is None:
        return None
    if len(value) > MAX_TEXT_PARAM:
        raise BadMedia(400, f"{name} is longer than {MAX_TEXT_PARAM} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise BadMedia(400, f"{name} holds control characters")
    return value


async def _caller(request: web.Request, lxm: str | tuple[str, ...]) -> Caller:
    try:
        caller = await request.app[AUTH].authenticate(request.headers, lxm)
    except Unauthorized as exc:
        raise web.HTTPUnauthorized(
            text=orjson.dumps({"error": exc.error, "message": exc.message}).decode(),
            content_type="application/json",
        ) from None
    # A verified caller spends its DID's budget; a server-key caller none (core/ratelimit.py).
    if caller.trusted:
        ratelimit.exempt(request)
    elif caller.did is not None:
        verdict = ratelimit.charge_did(request, caller.did)
        if verdict is not None and not verdict.allowed:
            message = f"rate limit exceeded: {verdict.limit} requests per {verdict.window} s per account"
            raise web.HTTPTooManyRequests(
                text=orjson.dumps({"error": "RateLimitExceeded", "message": message}).decode(),
                content_type="application/json",
            )
    return caller


async def _receive_body(request: web.Request, ctx: MediaContext, limit: int) -> Received:
    """Stream the request's file (raw body or the multipart field "file") to a temp file."""
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise TooLarge(limit)  # announced too large: refuse before reading anything
    if request.content_type.startswith("multipart/"):
        # aiohttp raises ValueError (or its subclasses) for a malformed multipart body: that
        # is the client's mistake, a 400, not a 500.
        settings = ctx.settings
        try:
            # The parts before "file" are read under one deadline: receive() times the rest.
            async with asyncio.timeout(settings.upload_rate_grace_s + settings.upload_idle_timeout_s):
                reader = await request.multipart()
                while True:
                    part = await reader.next()
                    if part is None:
                        raise BadMedia(400, 'the multipart body has no "file" field')
                    if isinstance(part, BodyPartReader) and part.name == "file":
                        file_part = part
                        break
                    await part.release()
        except BadMedia:
            raise
        except TimeoutError:
            raise UploadTimeout("the multipart body did not reach its file in time", idle=False) from None
        except (ValueError, AssertionError) as exc:
            raise BadMedia(400, f"malformed multipart body: {exc}") from None

        async def read() -> bytes:
            try:
                return await file_part.read_chunk(READ_PIECE)
            except (ValueError, AssertionError) as exc:
                raise BadMedia(400, f"malformed multipart body: {exc}") from None
    else:
        async def read() -> bytes:
            return await request.content.readany()

    return await receive(
        read, tmp_dir=ctx.settings.tmp_dir, limit=limit, chunk_bytes=ctx.settings.chunk_bytes,
        idle_timeout_s=ctx.settings.upload_idle_timeout_s,
        min_rate=ctx.settings.upload_min_rate_bytes_s, grace_s=ctx.settings.upload_rate_grace_s,
    )


async def _hang_up(request: web.Request, resp: web.Response) -> web.Response:
    """Send `resp` and close the connection without reading the rest of the body: aiohttp
    would otherwise keep reading (lingering) for up to 10 s, holding the connection that a
    stalled upload should free at once. Only for senders that went quiet: closing on a client
    still sending could reset the connection before it reads the answer."""
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    if request.protocol is not None:
        request.protocol.force_close()
    return resp


async def _upload(request: web.Request, kind: str) -> web.Response:
    ctx = request.app[CTX]
    caller = await _caller(request, LXM_UPLOAD_AUDIO if kind == "audio" else LXM_UPLOAD_IMAGE)
    limit = ctx.settings.max_audio_bytes if kind == "audio" else ctx.settings.max_image_bytes
    slots = request.app[UPLOAD_SLOTS]
    who = caller.did or "trusted caller"
    if not slots.acquire(who):
        UPLOADS.labels(kind, "too_many").inc()
        resp = _error(429, "TooManyUploads", "too many uploads in progress; try again later")
        resp.headers["Retry-After"] = str(UPLOAD_RETRY_AFTER_S)
        # Not read; aiohttp drains what the client still sends for a few seconds before closing,
        # so that a client busy sending reads this answer instead of a connection reset.
        resp.force_close()
        return resp
    received: Received | None = None
    try:
        title = _text_param(request, "title")
        artist = _text_param(request, "artist")
        try:
            received = await _receive_body(request, ctx, limit)
        except TooLarge as exc:
            UPLOADS.labels(kind, "too_large").inc()
            resp = _error(413, "PayloadTooLarge", str(exc))
            resp.force_close()  # do not read the rest of a body we refused (beyond aiohttp's drain)
            return resp
        except UploadTimeout as exc:
            UPLOADS.labels(kind, "timeout").inc()
            resp = _error(408, "RequestTimeout", str(exc))
            if exc.idle:
                return await _hang_up(request, resp)  # it sends nothing: free the connection now
            resp.force_close()  # still sending (slowly): let aiohttp drain briefly, then close
            return resp
        if kind == "audio":
            cover = request.query.get("cover")
            if cover is not None and (len(cover) != 64 or not set(cover) <= _SHA):
                raise BadMedia(400, "cover must be the sha256 of an uploaded image")
            result = await ingest_audio(
                ctx,
                received,
                owner=caller.did,
                title=title,
                artist=artist,
                cover_sha256=cover,
            )
        else:
            result = await ingest_image(ctx, received, owner=caller.did)
    except BadMedia as exc:
        UPLOADS.labels(kind, "rejected").inc()
        return _error(exc.status, _ERROR_NAMES.get(exc.status, "InvalidMedia"), str(exc))
    except StorageError as exc:
        UPLOADS.labels(kind, "storage_error").inc()
        log.error("storage failed during upload", extra={"error": str(exc)})
        if (err := exhausted_errno(exc)) is not None:
            return _unavailable(_exhausted_name(err), f"{describe(err)}; try again later")
        return _unavailable("StorageUnavailable", "storage is unavailable; try again later")
    finally:
        slots.release(who)
        if received is not None:
            received.discard()
    UPLOADS.labels(kind, "ok").inc()
    return _json(result, status=201 if result.get("created") else 200)


async def upload_audio(request: web.Request) -> web.Response:
    return await _upload(request, "audio")


async def upload_image(request: web.Request) -> web.Response:
    return await _upload(request, "image")


def _job_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound(
            text='{"error":"NotFound","message":"no such job"}', content_type="application/json"
        )
    return int(raw)


async def _readable_job(request: web.Request) -> jobs.Job | web.Response:
    """The job of the URL if the caller may read it, else the error to answer with.

    Job ids are sequential, so knowing one proves nothing: the caller must authenticate and
    be the job's owner (who queued it), an uploader the job was handed to, or a trusted caller.
    """
    job_id = _job_id(request)
    caller = await _caller(request, JOB_READ_LXMS)
    pool = request.app[CTX].pool
    job = await jobs.get_job(pool, job_id)
    if job is None:
        return _error(404, "NotFound", "no such job")
    if not caller.trusted and not await jobs.may_read(pool, job, caller.did):
        return _error(403, "Forbidden", "this job belongs to another account")
    return job


async def get_job(request: web.Request) -> web.Response:
    job = await _readable_job(request)
    if isinstance(job, web.Response):
        return job
    return _json(job.public(), headers={"Cache-Control": "no-store"})


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the job's state now, then on every change, until it is done or failed."""
    job_id = _job_id(request)
    ctx = request.app[CTX]
    hub = request.app[EVENTS]
    queue = hub.subscribe(job_id)  # before reading the state: no change can slip between
    try:
        # Authenticated once, here: the stream may outlive the token (service-auth JWTs are
        # short-lived), as a response already being sent would.
        job = await _readable_job(request)
        if isinstance(job, web.Response):
            return job
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        last: dict[str, Any] | None = None
        while True:
            state = job.public()
            if state != last:
                event = job.status if job.status in TERMINAL else "progress"
                await resp.write(f"event: {event}\ndata: {orjson.dumps(state).decode()}\n\n".encode())
                last = state
            if job.status in TERMINAL:
                break
            try:
                await asyncio.wait_for(queue.get(), 15)
                while not queue.empty():
                    queue.get_nowait()
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
            fresh = await jobs.get_job(ctx.pool, job_id)
            if fresh is None:
                break
            job = fresh
        await resp.write_eof()
        return resp
    finally:
        hub.unsubscribe(job_id, queue)


async def create_export(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    caller = await _caller(request, LXM_CREATE_EXPORT)
    did = caller.did
    if caller.trusted and request.query.get("did"):
        did = request.query["did"]
        if not is_did(did):
            return _error(400, "InvalidRequest", "did must be a valid DID")
    if not did:
        return _error(400, "InvalidRequest", "name the account to export (X-Plyr-Did or ?did=)")
    async with ctx.pool.acquire() as conn:
        # Nothing changed since a recent export: hand that one back rather than store another
        # zip for PLYR_MEDIA_EXPORT_TTL_S (each request would otherwise cost a full copy).
        state = await content_state(conn, did)
        if state is not None:
            reused = await reusable_export(conn, did, state, ttl_s=ctx.settings.export_ttl_s)
            if reused is not None:
                return _json(_export_links(reused) | {"reused": True})
        job_id = await jobs.enqueue(
            conn, kind="export", owner=did, payload={"did": did},
            max_attempts=ctx.settings.job_max_attempts, dedupe_key=did,
        )
    return _json(_export_links(job_id), status=202)


def _export_links(job_id: int) -> dict[str, Any]:
    return {"jobId": job_id, "status": f"/jobs/{job_id}", "events": f"/jobs/{job_id}/events"}


async def download_export(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    caller = await _caller(request, LXM_GET_EXPORT)
    job = await jobs.get_job(ctx.pool, _job_id(request))
    if job is None or job.kind != "export" or (not caller.trusted and caller.did != job.owner):
        return _error(404, "NotFound", "no such export")
    if job.status != "done" or not job.result:
        return _error(409, "NotReady", f"the export is {job.status}")
    if job.result.get("expired"):
        return _error(410, "Expired", "this export has expired; ask for a new one")
    key, filename = job.result["key"], job.result["filename"]
    disposition = f'attachment; filename="{filename}"'
    redirect = await ctx.storage.download_url(key, filename)
    if redirect is not None:
        raise web.HTTPFound(redirect)
    assert isinstance(ctx.storage, LocalStorage)
    path = ctx.storage.path(key)
    if not path.is_file():
        return _error(410, "Gone", "the export file is no longer stored")
    return web.FileResponse(path, headers={"Content-Disposition": disposition, "Content-Type": "application/zip", "Cache-Control": "private, no-store"})


async def serve_media(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    key = request.match_info["key"]
    # Exports are private: they are only reachable through /exports/{id}/download.
    if not valid_key(key) or key.startswith("exports/"):
        return _error(404, "NotFound", "no such object")
    redirect = await ctx.storage.download_url(key)
    if redirect is not None:
        raise web.HTTPFound(redirect, headers={"Cache-Control": "no-store"})
    assert isinstance(ctx.storage, LocalStorage)
    path = ctx.storage.path(key)
    if not path.is_file():
        return _error(404, "NotFound", "no such object")
    # Keys name content (sha-256), so an object never changes: cache it for good.
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=31536000, immutable"})


async def health(request: web.Request) -> web.Response:
    async with request.app[CTX].pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
    return _json({"ok": True})


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
