"""Politeness: rate-limit headers, 429 pauses, retries with backoff, clear permanent failures.

A small aiohttp server on 127.0.0.1 scripts the answers; sleeping is recorded, not waited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from indexer.backfill.http import (
    FetchError,
    PoliteClient,
    Politeness,
    parse_retry_after,
    rate_limit_wait,
)


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7
    assert parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now) == pytest.approx(20, abs=1)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_ratelimit_headers() -> None:
    now = 1_700_000_000.0
    # atproto PDS: RateLimit-Reset is a unix time
    assert (
        rate_limit_wait(
            {"RateLimit-Remaining": "0", "RateLimit-Reset": str(int(now) + 30)}, now, refused=False
        )
        == 30
    )
    # remaining left: no pause
    assert (
        rate_limit_wait(
            {"RateLimit-Remaining": "5", "RateLimit-Reset": str(int(now) + 30)}, now, refused=False
        )
        is None
    )
    # refused with a delta-seconds reset (IETF draft form)
    assert rate_limit_wait({"RateLimit-Reset": "12"}, now, refused=True) == 12
    # Retry-After wins
    assert rate_limit_wait({"Retry-After": "3", "RateLimit-Reset": "12"}, now, refused=True) == 3
    assert rate_limit_wait({}, now, refused=True) is None


class Script:
    def __init__(self) -> None:
        self.answers: list[web.Response] = []
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.answers:
            return self.answers.pop(0)
        return web.json_response({"ok": True})


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Script]]:
    script = Script()
    app = web.Application()
    app.router.add_get("/x", script.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/x", script
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _client(session: aiohttp.ClientSession, sleeps: list[float], **rules) -> PoliteClient:
    now = [1000.0]  # a monotonic clock that sleeping advances

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    return PoliteClient(
        session, Politeness(backoff_base=0.5, **rules), sleep=fake_sleep, clock=lambda: now[0]
    )


async def test_429_retry_after_pauses_then_succeeds(server, session) -> None:
    url, script = server
    script.answers = [
        web.json_response({"error": "RateLimitExceeded"}, status=429, headers={"Retry-After": "7"})
    ]
    sleeps: list[float] = []
    client = _client(session, sleeps)
    assert await client.get_json(url) == {"ok": True}
    assert script.hits == 2
    assert client.rate_limited == 1
    assert sum(sleeps) == pytest.approx(7, abs=0.01)  # waited what the server asked, once


async def test_remaining_zero_pauses_the_host_before_the_next_request(server, session) -> None:
    url, script = server
    reset = int(time.time()) + 20
    script.answers = [
        web.json_response(
            {"a": 1}, headers={"RateLimit-Remaining": "0", "RateLimit-Reset": str(reset)}
        )
    ]
    sleeps: list[float] = []
    client = _client(session, sleeps)
    await client.get_json(url)
    assert sleeps == []
    await client.get_json(url)
    assert len(sleeps) == 1 and 15 < sleeps[0] <= 21


async def test_5xx_is_retried_with_growing_backoff_then_fails(server, session) -> None:
    url, script = server
    script.answers = [web.Response(status=502) for _ in range(10)]
    sleeps: list[float] = []
    client = _client(session, sleeps, retries=3)
    with pytest.raises(FetchError) as info:
        await client.get_json(url, what="listRepos")
    assert info.value.transient and "HTTP 502" in info.value.reason
    assert script.hits == 4
    assert len(sleeps) == 3
    assert sleeps[2] > sleeps[0]  # exponential (with jitter in [0.5, 1])


async def test_permanent_failures_are_not_retried(server, session) -> None:
    url, script = server
    sleeps: list[float] = []
    client = _client(session, sleeps)
    script.answers = [
        web.json_response({"error": "RepoNotFound", "message": "no such repo"}, status=400)
    ]
    with pytest.raises(FetchError) as info:
        await client.get_json(url, what="getRepo")
    assert not info.value.transient
    assert info.value.error == "RepoNotFound" and "no such repo" in info.value.reason
    script.answers = [web.Response(text="<html>hi</html>", content_type="text/html")]
    with pytest.raises(FetchError, match="answered text/html"):
        await client.get_json(url)
    assert script.hits == 2 and sleeps == []


async def test_unreachable_host_is_a_transient_failure(session) -> None:
    sleeps: list[float] = []
    client = _client(session, sleeps, retries=1)
    with pytest.raises(FetchError, match="cannot reach") as info:
        await client.get_json("http://127.0.0.1:9/x")
    assert info.value.transient and len(sleeps) == 1


async def test_per_host_limit(server, session) -> None:
    url, script = server
    running = 0
    peak = 0

    async def slow(_resp: aiohttp.ClientResponse) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    client = PoliteClient(session, Politeness(concurrency=10, per_host=2))
    await asyncio.gather(*(client.call(url, None, slow) for _ in range(6)))
    assert peak == 2
