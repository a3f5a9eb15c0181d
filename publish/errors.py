"""What `plyr publish` reports when something fails: one line, exit status 1, no traceback.

Every failure a musician can meet becomes a `PublishError` (a `core.errors.PlyrError`, which
`plyr` prints as `error: <message>`): the PDS refusing the password or a record, the PDS or our
media service down, a file the media service refuses (with its own reason), a transcode that
failed. `pds_failure` turns the atproto SDK's exceptions into one, `media_failure` our media
service's `{"error", "message"}` answers.
"""

from __future__ import annotations

from typing import Any

from core.errors import PlyrError


class PublishError(PlyrError):
    """A failure of `plyr publish`, said for people in one line."""


class NotLoggedIn(PublishError):
    """No session is stored (or it was revoked): `plyr publish login HANDLE` first."""

    def __init__(self, message: str = "not logged in: run `plyr publish login HANDLE` first") -> None:
        super().__init__(message)


def _xrpc_error(content: Any) -> tuple[str | None, str | None]:
    """(error, message) of an XRPC error body, whichever form the SDK left it in."""
    if content is None:
        return None, None
    error = getattr(content, "error", None)
    message = getattr(content, "message", None)
    if isinstance(content, dict):
        error, message = content.get("error"), content.get("message")
    if isinstance(content, bytes | str):
        text = content.decode(errors="replace") if isinstance(content, bytes) else content
        return None, " ".join(text.split())[:200] or None
    return (str(error) if error else None), (str(message) if message else None)


def describe_status(status: int | None, error: str | None, message: str | None) -> str:
    """`Error: message (HTTP 400)`, leaving out what is missing."""
    text = ": ".join(part for part in (error, message) if part) or "no details given"
    return f"{text} (HTTP {status})" if status is not None else text


def pds_failure(exc: Exception, doing: str, *, pds_url: str | None = None) -> PublishError:
    """The one-line error for an exception the atproto SDK (or httpx under it) raised while
    `doing` something at the user's PDS (`doing`: "log in", "write the track record", ...)."""
    import httpx
    from atproto_client import exceptions as sdk  # type: ignore[import-untyped]

    where = f" at {pds_url}" if pds_url else ""
    if isinstance(exc, sdk.RequestErrorBase) and exc.response is None or isinstance(exc, httpx.HTTPError):
        # No answer at all: the transport failed (refused, reset, timed out, DNS).
        cause = exc.__cause__ or exc
        reason = " ".join(str(cause).split()) or type(cause).__name__
        if isinstance(exc, sdk.InvokeTimeoutError) or isinstance(cause, httpx.TimeoutException):
            reason = "timed out"
        return PublishError(f"could not {doing}: your PDS{where} is unreachable ({reason})")
    if isinstance(exc, sdk.RequestErrorBase) and exc.response is not None:
        status = exc.response.status_code
        error, message = _xrpc_error(exc.response.content)
        if error == "AuthFactorTokenRequired":
            return PublishError(
                f"could not {doing}: this account asks for an email code; log in with an app password instead"
            )
        if doing == "log in" and status == 401:
            return PublishError(f"could not log in: wrong handle or password ({describe_status(status, error, message)})")
        if error in ("ExpiredToken", "InvalidToken") or (status == 401 and doing != "log in"):
            return NotLoggedIn(
                f"could not {doing}: your session is no longer valid ({describe_status(status, error, message)}); "
                "run `plyr publish login HANDLE` again"
            )
        if status >= 500:
            return PublishError(f"could not {doing}: your PDS{where} failed ({describe_status(status, error, message)})")
        return PublishError(f"could not {doing}: the PDS refused it ({describe_status(status, error, message)})")
    from atproto_client.exceptions import LoginRequiredError  # type: ignore[import-untyped]

    if isinstance(exc, LoginRequiredError):
        return NotLoggedIn()
    return PublishError(f"could not {doing}: {type(exc).__name__}: {exc}")


def media_failure(status: int, body: bytes, doing: str, media_url: str) -> PublishError:
    """The one-line error for a media service answer that is not a success: its own
    `{"error", "message"}` when it sent one (why a file was refused, say)."""
    import orjson

    error = message = None
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict):
            error, message = parsed.get("error"), parsed.get("message")
    except orjson.JSONDecodeError:
        message = " ".join(body.decode(errors="replace").split())[:200] or None
    details = describe_status(status, error, message)
    if status in (502, 503, 504) and error is None:
        return PublishError(f"could not {doing}: the media service at {media_url} is unavailable ({details})")
    if status >= 500:
        return PublishError(f"could not {doing}: the media service at {media_url} failed ({details})")
    if status == 401:
        return PublishError(f"could not {doing}: the media service refused our token ({details})")
    return PublishError(f"could not {doing}: the media service refused it ({details})")
