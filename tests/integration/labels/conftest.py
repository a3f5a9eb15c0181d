"""Fixtures for the label subscriber: a PLC stand-in, a real resolver on it, a fake labeler
serving subscribeLabels on loopback, and a helper to run a Subscriber while a test looks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import pytest

from core.backoff import Backoff
from core.net import outbound_connector
from indexer.labels.subscriber import Subscriber
from protocol.identity import IdentityResolver
from tests.integration.labels.fake_labeler import FakeLabeler
from tests.support.identity import local_resolver
from tests.unit.protocol.fake_identity_server import FakeIdentityServer


@pytest.fixture
async def plc() -> AsyncIterator[FakeIdentityServer]:
    server = FakeIdentityServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def resolver(plc: FakeIdentityServer) -> AsyncIterator[IdentityResolver]:
    # refresh_floor=0: a fresh lookup after a failed signature really fetches (key rotation).
    res = local_resolver(plc.url, refresh_floor=0)
    yield res
    await res.close()


@pytest.fixture
async def labeler(plc: FakeIdentityServer) -> AsyncIterator[FakeLabeler]:
    lab = FakeLabeler(plc)
    await lab.start()
    yield lab
    await lab.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # The guarded connector the runtime uses, with loopback allowed (the fake labeler's address).
    async with aiohttp.ClientSession(connector=outbound_connector(allow_private_network=True)) as s:
        yield s


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 15.0) -> None:
    """Wait for progress (a row, a cursor): polls `check`, fails with `what` after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def cursor_of(pool: asyncpg.Pool, did: str) -> int | None:
    return await pool.fetchval("SELECT cursor FROM label_cursors WHERE src = $1", did)


async def wait_cursor(pool: asyncpg.Pool, did: str, seq: int) -> None:
    async def reached() -> bool:
        return await cursor_of(pool, did) == seq

    await until(reached, f"cursor {seq} of {did}")


def make_subscriber(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, lab: FakeLabeler,
    **kw: object,
) -> Subscriber:  # fmt: skip
    kw.setdefault("backoff", Backoff(base=0.05, cap=0.2))
    return Subscriber(pool, session, resolver, lab.did, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(sub: Subscriber) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sub.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
