"""Rate limits shared by two AppView "processes" (two apps, one database): one budget per
client address and per authenticated DID, RateLimit-* headers, 429 + Retry-After, and a new
window after the clock moves (an injected clock, never a sleep)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from appview.app import LIMITS_KEY, build_app
from core.ratelimit import RateLimitSettings, RequestLimits
from protocol.identity import IdentityResolver
from tests.integration.appview.conftest import Plc, World, appview_settings
from tests.support.identity import local_resolver

LATEST = "/xrpc/fm.plyr.feed.getLatestTracks"
NSID = "fm.plyr.feed.getLatestTracks"
WINDOW = 60
START = 1_800_000_000 // WINDOW * WINDOW  # a window boundary


class Clock:
    def __init__(self) -> None:
        self.now = START + 5.0

    def __call__(self) -> float:
        return self.now


Node = tuple[TestClient, RequestLimits]


@pytest.fixture
async def nodes(pool: asyncpg.Pool, plc: Plc) -> AsyncIterator[Callable[..., Any]]:
    made: list[TestClient] = []
    resolvers: list[IdentityResolver] = []

    async def make(clock: Callable[[], float], **limits: Any) -> Node:
        resolver = local_resolver(plc.url)
        resolvers.append(resolver)
        settings = RateLimitSettings(enabled=True, window_seconds=WINDOW, loopback=True, **limits)
        app = build_app(pool, appview_settings(rate_limit=settings), resolver=resolver,
                        check_output=True, limits_clock=clock)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        made.append(client)
        return client, app[LIMITS_KEY]

    yield make
    for client in made:
        await client.close()
    for resolver in resolvers:
        await resolver.close()


async def sync(*nodes: Node) -> None:
    """A full exchange: every process adds its hits, then every one reads the others'."""
    for _round in range(2):
        for _client, limits in nodes:
            assert limits.counter is not None
            await limits.counter.sync()


async def test_two_processes_share_one_budget(nodes: Any, world: World, pool: asyncpg.Pool) -> None:
    clock = Clock()
    # Background syncs only every hour: this test syncs by hand after each request.
    a, b = [await nodes(clock, ip_limit=6, did_limit=4, sync_seconds=3600) for _ in range(2)]
    fan = await world.account("fan")

    # A verified viewer spends its DID's budget, whichever process answers, not the address's.
    statuses = []
    for i in range(6):
        client = (a, b)[i % 2][0]
        resp = await client.get(LATEST, headers=fan.auth(NSID))
        statuses.append(resp.status)
        if resp.status == 200:
            # Remaining is what this process knows (the other's latest hit may not be in it).
            assert resp.headers["RateLimit-Limit"] == "4"
            assert 0 <= int(resp.headers["RateLimit-Remaining"]) <= 3 - i + 1
            assert resp.headers["RateLimit-Policy"] == "4;w=60"
            assert resp.headers["RateLimit-Reset"] == str(START + WINDOW)
        else:
            body = await resp.json()
            assert body["error"] == "RateLimitExceeded" and "per account" in body["message"]
            assert resp.headers["Retry-After"] == str(math.ceil(START + WINDOW - clock.now))
            assert resp.headers["RateLimit-Remaining"] == "0"
        await sync(a, b)
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert await pool.fetchval("SELECT hits FROM rate_limits WHERE key = $1", "appview:did:" + fan.did) == 4

    # A token that does not verify is charged to the address.
    bad = await a[0].get(LATEST, headers={"Authorization": "Bearer not.a.token"})
    assert bad.status == 401 and bad.headers["RateLimit-Remaining"] == "5"
    await sync(a, b)

    # Anonymous requests: the address's budget (6, one spent by the bad token), across both.
    statuses = []
    retry_afters = []
    for i in range(8):
        client = (b, a)[i % 2][0]
        clock.now += 1
        resp = await client.get(LATEST)
        statuses.append(resp.status)
        assert resp.headers["RateLimit-Limit"] == "6"
        if resp.status == 429:
            assert (await resp.json())["error"] == "RateLimitExceeded"
            retry_afters.append(int(resp.headers["Retry-After"]))
        await sync(a, b)
    assert statuses == [200] * 5 + [429] * 3
    assert retry_afters == [WINDOW - 5 - 6, WINDOW - 5 - 7, WINDOW - 5 - 8]
    # A viewer whose address is spent is refused up front too.
    assert (await a[0].get(LATEST, headers=fan.auth(NSID))).status == 429
    assert await pool.fetchval("SELECT hits FROM rate_limits WHERE key = 'appview:ip:127.0.0.1'") == 6
    # Probes are never limited.
    assert (await a[0].get("/health")).status == 200

    # The next window: both budgets are whole again, on both processes.
    clock.now = START + WINDOW + 1
    for client, _limits in (a, b):
        fresh = await client.get(LATEST)
        assert fresh.status == 200 and fresh.headers["RateLimit-Reset"] == str(START + 2 * WINDOW)
        assert (await client.get(LATEST, headers=fan.auth(NSID))).status == 200
    await sync(a, b)
    assert await pool.fetchval(
        "SELECT hits FROM rate_limits WHERE key = 'appview:ip:127.0.0.1' AND window_start = $1",
        START + WINDOW) == 2


async def until(check: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + 10
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_background_sync_carries_the_count(nodes: Any, pool: asyncpg.Pool) -> None:
    clock = Clock()
    a, b = [await nodes(clock, ip_limit=5, sync_seconds=0.05) for _ in range(2)]
    a_client, _ = a
    b_client, b_limits = b
    assert b_limits.counter is not None
    for _ in range(5):
        assert (await a_client.get(LATEST)).status == 200
    assert (await a_client.get(LATEST)).status == 429

    async def a_flushed() -> bool:
        return await pool.fetchval("SELECT hits FROM rate_limits WHERE key = 'appview:ip:127.0.0.1'") == 5

    await until(a_flushed, "A's loop never added its hits")
    # B has never seen this address: it admits one (the documented slack of one sync
    # interval), syncs (a hot key wakes its loop), and from then on knows the total.
    syncs = b_limits.counter.syncs
    assert (await b_client.get(LATEST)).status == 200

    async def b_synced() -> bool:
        return b_limits.counter is not None and b_limits.counter.syncs > syncs + 1  # one may predate the hit

    await until(b_synced, "B never synced")
    refused = await b_client.get(LATEST)
    assert refused.status == 429 and int(refused.headers["Retry-After"]) == WINDOW - 5


async def test_loopback_is_not_limited_unless_asked(nodes: Any, pool: asyncpg.Pool, plc: Plc) -> None:
    resolver = local_resolver(plc.url)
    app = build_app(pool, appview_settings(rate_limit=RateLimitSettings(ip_limit=1)), resolver=resolver)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for _ in range(3):
            resp = await client.get(LATEST)
            assert resp.status == 200 and "RateLimit-Limit" not in resp.headers
    await resolver.close()
