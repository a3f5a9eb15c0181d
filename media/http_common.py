"""What the media HTTP routes share: the app's keys, JSON answers, and the authenticated caller."""

from __future__ import annotations

import errno
from typing import Any

import orjson
from aiohttp import web

from core import ratelimit
from media.auth import Authenticator, Caller, Unauthorized
from media.errors import RETRY_AFTER_S
from media.events import JobEvents
from media.ingest import MediaContext

CTX = web.AppKey("media_ctx", MediaContext)
AUTH = web.AppKey("media_auth", Authenticator)
EVENTS = web.AppKey("media_events", JobEvents)
LIMITS = web.AppKey("media_limits", ratelimit.RequestLimits)

ERROR_NAMES = {400: "InvalidRequest", 413: "PayloadTooLarge", 415: "UnsupportedMediaType", 422: "InvalidMedia"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_response(status: int, error: str, message: str) -> web.Response:
    return json_response({"error": error, "message": message}, status=status)


def exhausted_name(err: int) -> str:
    """The error name for a resource that ran out (media/errors.py)."""
    return "InsufficientStorage" if err in (errno.ENOSPC, errno.EDQUOT) else "ResourceExhausted"


def unavailable_response(error: str, message: str) -> web.Response:
    """503 with Retry-After: not the client's fault, and it may work again soon."""
    resp = error_response(503, error, message)
    resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    resp.force_close()  # the request body may be unread: do not parse it as the next request
    return resp


async def authenticated_caller(request: web.Request, lxm: str | tuple[str, ...]) -> Caller:
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
