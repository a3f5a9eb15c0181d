"""Upload routes: `POST /upload/audio` and `POST /upload/image`.

The file comes as the raw body or the multipart field "file", is streamed to a temp file
(media/receive.py) and ingested (media/ingest.py). Uploads in flight are bounded per caller
and in all; a sender that goes quiet is hung up on.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata

from aiohttp import web
from prometheus_client import Counter, Gauge

from media.auth import LXM_UPLOAD_AUDIO, LXM_UPLOAD_IMAGE
from media.errors import describe, exhausted_errno
from media.http_common import (
    CTX,
    ERROR_NAMES,
    authenticated_caller,
    error_response,
    exhausted_name,
    json_response,
    unavailable_response,
)
from media.ingest import BadMedia, MediaContext, ingest_audio, ingest_image
from media.receive import Received, TooLarge, UploadTimeout, receive
from media.storage import StorageError

log = logging.getLogger("plyr.media.http")

UPLOADS = Counter("plyr_media_uploads_total", "Uploads by kind and outcome", ["kind", "outcome"])
UPLOADS_IN_FLIGHT = Gauge("plyr_media_uploads_in_flight", "Uploads being received or ingested now")
UPLOAD_RETRY_AFTER_S = 5
READ_PIECE = 1024 * 1024
MAX_TEXT_PARAM = 1000  # characters of ?title= / ?artist=
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


UPLOAD_SLOTS = web.AppKey("media_upload_slots", UploadSlots)


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
                    if getattr(part, "name", None) == "file":
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
                return await part.read_chunk(READ_PIECE)  # type: ignore[union-attr]
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
    caller = await authenticated_caller(request, LXM_UPLOAD_AUDIO if kind == "audio" else LXM_UPLOAD_IMAGE)
    limit = ctx.settings.max_audio_bytes if kind == "audio" else ctx.settings.max_image_bytes
    slots = request.app[UPLOAD_SLOTS]
    who = caller.did or "trusted caller"
    if not slots.acquire(who):
        UPLOADS.labels(kind, "too_many").inc()
        resp = error_response(429, "TooManyUploads", "too many uploads in progress; try again later")
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
            resp = error_response(413, "PayloadTooLarge", str(exc))
            resp.force_close()  # do not read the rest of a body we refused (beyond aiohttp's drain)
            return resp
        except UploadTimeout as exc:
            UPLOADS.labels(kind, "timeout").inc()
            resp = error_response(408, "RequestTimeout", str(exc))
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
        return error_response(exc.status, ERROR_NAMES.get(exc.status, "InvalidMedia"), str(exc))
    except StorageError as exc:
        UPLOADS.labels(kind, "storage_error").inc()
        log.error("storage failed during upload", extra={"error": str(exc)})
        if (err := exhausted_errno(exc)) is not None:
            return unavailable_response(exhausted_name(err), f"{describe(err)}; try again later")
        return unavailable_response("StorageUnavailable", "storage is unavailable; try again later")
    finally:
        slots.release(who)
        if received is not None:
            received.discard()
    UPLOADS.labels(kind, "ok").inc()
    return json_response(result, status=201 if result.get("created") else 200)


async def upload_audio(request: web.Request) -> web.Response:
    return await _upload(request, "audio")


async def upload_image(request: web.Request) -> web.Response:
    return await _upload(request, "image")
