"""The backfill client behind the address guard: a PDS or relay at a non-public address fails
at once with a clear, permanent FetchError (no retries), and nothing reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from core.net import outbound_connector
from indexer.backfill.http import FetchError, PoliteClient, Politeness
from tests.support.stub_resolver import StubResolver


@pytest.fixture
async def pds() -> AsyncIterator[tuple[int, list[str]]]:
    hits: list[str] = []

    async def list_repos(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"repos": []})

    app = web.Application()
    app.router.add_get("/xrpc/com.atproto.sync.listRepos", list_repos)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield runner.addresses[0][1], hits
    await runner.cleanup()


async def _get(connector: aiohttp.TCPConnector, url: str, sleeps: list[float]) -> object:
    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with aiohttp.ClientSession(connector=connector) as session:
        client = PoliteClient(session, Politeness(retries=3), sleep=no_sleep)
        return await client.get_json(url, what="listRepos")


@pytest.mark.parametrize("host", ["127.0.0.1", "pds.attacker-example.com"])
async def test_a_pds_at_a_private_address_fails_at_once(
    pds: tuple[int, list[str]], host: str
) -> None:
    port, hits = pds
    stub = StubResolver({"pds.attacker-example.com": ["127.0.0.1"]})
    url = f"http://{host}:{port}/xrpc/com.atproto.sync.listRepos"
    sleeps: list[float] = []
    guarded = outbound_connector(allow_private_network=False, resolver=stub)
    with pytest.raises(FetchError) as info:
        await _get(guarded, url, sleeps)
    assert not info.value.transient and sleeps == []
    assert "loopback" in info.value.reason and "PLYR_ALLOW_PRIVATE_NETWORK" in info.value.reason
    assert hits == []
    # The setting on: the same request goes through.
    allowed = outbound_connector(allow_private_network=True, resolver=stub)
    assert await _get(allowed, url, sleeps) == {"repos": []}
    assert len(hits) == 1
