"""The media app's error middleware: every failure leaves as JSON, details only in the log."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from media.errors import ResourceExhausted, exhausted_errno
from media.http import create_app


def _raiser(exc: BaseException) -> Any:
    async def handler(request: web.Request) -> web.Response:
        raise exc

    return handler


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    # create_app only stores the context, auth and events: the routes under test need none.
    app = create_app(None, None, None)  # type: ignore[arg-type]
    app.router.add_get("/t/boom", _raiser(RuntimeError("secret detail /var/lib/db")))
    app.router.add_get("/t/disk", _raiser(OSError(errno.ENOSPC, "No space left on device")))
    app.router.add_get("/t/quota", _raiser(ResourceExhausted(errno.EDQUOT)))
    app.router.add_get("/t/db", _raiser(asyncpg.exceptions.CannotConnectNowError("db plyr_x at 10.0.0.5")))
    app.router.add_get("/t/sql", _raiser(asyncpg.exceptions.UndefinedTableError("relation secret_table")))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "path,status,error,retry",
    [
        ("/t/boom", 500, "InternalServerError", False),
        ("/t/sql", 500, "InternalServerError", False),
        ("/t/disk", 503, "InsufficientStorage", True),
        ("/t/quota", 503, "InsufficientStorage", True),
        ("/t/db", 503, "DatabaseUnavailable", True),
        ("/nowhere", 404, "NotFound", False),
    ],
)
async def test_errors_are_json(base_url: str, path: str, status: int, error: str, retry: bool) -> None:
    async with aiohttp.ClientSession() as session, session.get(base_url + path) as resp:
        text = await resp.text()
        assert resp.status == status, text
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["error"] == error and set(body) == {"error", "message"}
        assert bool(resp.headers.get("Retry-After")) == retry
        for secret in ("secret", "10.0.0.5", "plyr_x", "/var/lib"):
            assert secret not in text


def test_exhaustion_is_found_through_causes() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError as inner:
            raise RuntimeError("storage failed") from inner
    except RuntimeError as outer:
        assert exhausted_errno(outer) == errno.ENOSPC
    assert exhausted_errno(OSError(errno.EMFILE, "x")) == errno.EMFILE
    assert exhausted_errno(MemoryError()) == errno.ENOMEM
    assert exhausted_errno(OSError(errno.ENOENT, "x")) is None
    assert exhausted_errno(ValueError("x")) is None
