"""HTTP behaviour shared by every path: errors as XRPC JSON, CORS from an allow-list, and
ETag/Cache-Control for public responses."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from appview.errors import XRPCError
from core.db import is_unavailable

log = logging.getLogger("plyr.appview")

_STATUS_ERRORS = {
    400: "InvalidRequest",
    401: "AuthRequired",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    413: "PayloadTooLarge",
    414: "URITooLong",
    415: "UnsupportedMediaType",
    431: "RequestHeaderFieldsTooLarge",
    501: "NotImplemented",
}


# Seconds a client should wait before retrying a 503/429.
RETRY_AFTER = "1"


# The database is not there now (core.db's one classifier): a 503 the client may retry, never
# with the error's text (it names hosts and databases).
database_unavailable = is_unavailable


def unavailable_response() -> web.Response:
    return error_response(503, "ServiceUnavailable", "the index is unavailable; retry shortly",
                          {"Retry-After": RETRY_AFTER})


def error_response(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": error, "message": message}),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes `{"error", "message"}`; unexpected ones a logged 500, no traceback."""
    try:
        return await handler(request)
    except XRPCError as exc:
        # A 401 names the scheme it wants (XRPC spec: 401 carries WWW-Authenticate).
        headers: dict[str, str] = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="plyr-appview"'
        elif exc.status in (429, 503):
            headers["Retry-After"] = RETRY_AFTER
        return error_response(exc.status, exc.error, exc.message, headers or None)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        message = exc.text or exc.reason
        if exc.status == 404 and request.path.startswith("/xrpc/"):
            return error_response(404, "MethodNotImplemented", "no such XRPC method", headers)
        return error_response(exc.status, _STATUS_ERRORS.get(exc.status, "Error"), message, headers)
    except Exception as exc:
        if database_unavailable(exc):
            # Logged for operators (the text may name the host); the client learns only "retry".
            log.warning("database unavailable", extra={"path": request.path, "error": str(exc)[:300]})
            return unavailable_response()
        log.exception("unexpected error", extra={"path": request.path, "method": request.method})
        return error_response(500, "InternalServerError", "an unexpected error occurred")


# For responses that set no policy of their own (JSON, errors): nothing may load or frame them
# should one ever be rendered as a document. HTML pages set theirs (web_pages.py).
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'"


async def add_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, errors and 304s included. nosniff stops a browser
    from reading JSON (which echoes client text) as HTML or script."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)


def add_vary(headers: Any, name: str) -> None:
    """Merge `name` into the Vary header (one header, each name once, whatever the case)."""
    present = [v.strip() for value in headers.getall("Vary", []) for v in value.split(",") if v.strip()]
    if name.lower() not in {v.lower() for v in present}:
        present.append(name)
    headers["Vary"] = ", ".join(present)


# What a browser client may read: freshness, read-after-write, labelers applied and rate-limit
# headers.
EXPOSED_HEADERS = ("ETag, Plyr-Index-Event-Time, Plyr-Index-Lag, atproto-repo-rev, atproto-content-labelers, "
                   "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy, Retry-After")


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    """Allow the configured origins. With "*", any origin may read public data but no
    credentials are allowed; a listed origin is echoed back and may send credentials.

    Whenever CORS is on, every response says `Vary: Origin`, the ones fetched without an Origin
    too: they lack the CORS headers, and a shared cache must not hand such a copy to a
    cross-origin request (nor one origin's echoed copy to another)."""
    allowed = frozenset(origins)
    any_origin = "*" in allowed
    enabled = bool(allowed)

    def headers_for(origin: str | None) -> dict[str, str]:
        if not origin:
            return {}
        if origin in allowed:
            return {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            }
        if any_origin:
            return {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            }
        return {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not enabled:
            return await handler(request)
        origin = request.headers.get("Origin")
        extra = headers_for(origin)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not extra:
                refused = web.Response(status=403, text="origin not allowed")
                add_vary(refused.headers, "Origin")
                return refused
            extra.update(
                {
                    "Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-None-Match, "
                    "atproto-accept-labelers, atproto-proxy",
                    "Access-Control-Max-Age": "600",
                }
            )
            preflight = web.Response(status=204, headers=extra)
            add_vary(preflight.headers, "Origin")
            return preflight
        response = await handler(request)
        response.headers.update(extra)
        add_vary(response.headers, "Origin")
        return response

    return middleware


def etag_of(body: bytes) -> str:
    # Weak: the same JSON may travel gzip-compressed or not. SHA-1 (not for security: a
    # fingerprint) runs in hardware here, the fastest of hashlib's on a 30 KB page.
    return 'W/"' + hashlib.sha1(body).hexdigest()[:24] + '"'


def not_modified(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag.removeprefix("W/") in tags
