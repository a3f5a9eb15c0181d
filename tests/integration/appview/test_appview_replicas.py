"""Reads from a real streaming replica (tests/support/replica.py): routing, the freshness header
as the replica sees it, read-your-writes across processes, the lag bound, and a replica dying
under load with no error to clients.

Replay is paused with pg_wal_replay_pause() to make lag deterministic: a row written on the
primary then exists there and not on the replica, which shows where each read went."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from appview.app import READ_ROUTER_KEY, build_app
from appview.replicas import ReadRouter
from core import db
from core.migrate import apply_migrations
from core.settings import CoreSettings
from tests.integration.appview.conftest import Plc, World, appview_settings
from tests.support.identity import local_resolver
from tests.support.replica import StreamingPair, start_streaming_pair

LATEST = "/xrpc/fm.plyr.feed.getLatestTracks"
PLAY = "fm.plyr.play.recordPlay"
PROGRESS_TIMEOUT = 60.0  # a bound for a stuck test only: each wait polls for the awaited state


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@pytest.fixture(scope="module")
def pair() -> Iterator[StreamingPair]:
    started = start_streaming_pair()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
async def template(pair: StreamingPair) -> str:
    conn = await db.connect(pair.primary.url)
    try:
        await conn.execute('CREATE DATABASE "plyr_tpl"')
    finally:
        await conn.close()
    conn = await db.connect(_with_database(pair.primary.url, "plyr_tpl"))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return "plyr_tpl"


class Replicated:
    """A fresh migrated database on the primary, as the replica has it too."""

    def __init__(self, pair: StreamingPair, name: str) -> None:
        self.pair = pair
        self.primary_url = _with_database(pair.primary.url, name)
        self.replica_url = _with_database(pair.replica.url, name)
        self.pools: list[asyncpg.Pool] = []

    async def pool(self, url: str) -> asyncpg.Pool:
        pool = await db.create_pool(url, CoreSettings.from_env(), min_size=0, max_size=5)
        self.pools.append(pool)
        return pool

    async def replica_sql(self, sql: str) -> Any:
        conn = await asyncpg.connect(self.pair.replica.url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    async def wait_replayed(self, primary: asyncpg.Pool, replica: asyncpg.Pool) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        lsn = await primary.fetchval("SELECT pg_current_wal_lsn()")

        async def caught_up() -> bool:
            return bool(await replica.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn))

        await wait_until(caught_up, "the replica to replay the primary's writes")


@pytest.fixture
async def replicated(pair: StreamingPair, template: str) -> AsyncIterator[Replicated]:
    name = f"plyr_r_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pair.primary.url)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    found = Replicated(pair, name)

    async def on_replica() -> bool:
        return bool(await found.replica_sql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"))

    await wait_until(on_replica, "the new database on the replica")
    yield found
    await found.replica_sql("SELECT pg_wal_replay_resume()")
    for pool in found.pools:
        await pool.close()
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
async def serve(plc: Plc) -> AsyncIterator[Callable[..., Awaitable[TestClient]]]:
    clients: list[TestClient] = []

    async def start(primary: asyncpg.Pool, replica: Any, primary_url: str, **overrides: Any) -> TestClient:
        resolver = local_resolver(plc.url)
        app = build_app(primary, appview_settings(**overrides), resolver=resolver, check_output=True,
                        replicas=[("replica", replica)], primary_url=primary_url)  # fmt: skip
        app.on_cleanup.append(lambda _app: resolver.close())
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def router_of(client: TestClient) -> ReadRouter:
    return client.app[READ_ROUTER_KEY]  # type: ignore[union-attr]


async def titles(client: TestClient, headers: dict[str, str] | None = None) -> list[str]:
    resp = await client.get(LATEST, headers=headers or {})
    assert resp.status == 200, await resp.text()
    return [t["title"] for t in (await resp.json())["tracks"]]


async def test_reads_come_from_the_replica_and_the_header_shows_its_position(
    replicated: Replicated, serve: Any, plc: Plc
) -> None:
    primary = await replicated.pool(replicated.primary_url)
    replica = await replicated.pool(replicated.replica_url)
    world = World(primary, plc)
    ann = await world.account("ann")
    await world.track(ann, "old tune")
    old_time = datetime(2026, 1, 1, 12, tzinfo=UTC)
    await primary.execute("INSERT INTO cursors (source, seq, event_time) VALUES ('relay', 1, $1)", old_time)
    await replicated.wait_replayed(primary, replica)
    # A bound wider than the lag made below (the cursor ~11 months behind): the replica stays in use.
    client = await serve(primary, replica, replicated.primary_url, replica_max_lag=10**9)

    await replica.execute("SELECT pg_wal_replay_pause()")
    await world.track(ann, "new tune")
    await primary.execute("UPDATE cursors SET seq = 2, event_time = now() WHERE source = 'relay'")
    await primary.execute("SELECT pg_switch_wal()")  # nudge the WAL out to the standby

    # The primary has the new track; reads are answered by the replica, which does not.
    assert await primary.fetchval("SELECT count(*) FROM tracks") == 2
    assert await titles(client) == ["old tune"]
    resp = await client.get(LATEST)
    assert resp.headers["Plyr-Index-Event-Time"] == "2026-01-01T12:00:00Z"  # the replica's cursor row
    assert float(resp.headers["Plyr-Index-Lag"]) > 3600
    # The health check saw the replica behind the primary's cursor (and kept it: within the bound).
    await wait_until(lambda: _true(router_of(client).replicas[0].lag > 3600), "the lag to be measured")
    assert router_of(client).replicas[0].usable
    assert await titles(client) == ["old tune"]

    await replica.execute("SELECT pg_wal_replay_resume()")
    await wait_until(lambda: _has(client, "new tune"), "the replica to replay the new track")
    # The cursor moved in a later transaction than the track: wait for the header to follow it.
    await wait_until(lambda: _event_time_is_not(client, "2026-01-01T12:00:00Z"), "the replica's newer cursor")


async def _true(value: bool) -> bool:
    return value


async def _has(client: TestClient, title: str) -> bool:
    return title in await titles(client)


async def _event_time_is_not(client: TestClient, stale: str) -> bool:
    resp = await client.get(LATEST)
    return bool(resp.headers["Plyr-Index-Event-Time"] != stale)


async def test_a_replica_too_far_behind_is_not_read_from(replicated: Replicated, serve: Any, plc: Plc) -> None:
    primary = await replicated.pool(replicated.primary_url)
    replica = await replicated.pool(replicated.replica_url)
    world = World(primary, plc)
    ann = await world.account("ann")
    await primary.execute("INSERT INTO cursors (source, seq, event_time) VALUES ('relay', 1, now())")
    await replicated.wait_replayed(primary, replica)
    client = await serve(primary, replica, replicated.primary_url, replica_max_lag=5)
    await wait_until(lambda: _true(router_of(client).replicas[0].usable), "the replica to be in use")

    await replica.execute("SELECT pg_wal_replay_pause()")
    await world.track(ann, "fresh")
    await primary.execute("UPDATE cursors SET event_time = now() + interval '1 minute' WHERE source = 'relay'")
    await wait_until(lambda: _true(not router_of(client).replicas[0].usable), "the replica to be dropped")
    assert await titles(client) == ["fresh"]  # from the primary

    await replica.execute("SELECT pg_wal_replay_resume()")
    await wait_until(lambda: _true(router_of(client).replicas[0].usable), "the replica to be back in use")


async def test_a_viewer_reads_their_own_play_in_every_worker(replicated: Replicated, serve: Any, plc: Plc) -> None:
    primary = await replicated.pool(replicated.primary_url)
    replica = await replicated.pool(replicated.replica_url)
    world = World(primary, plc)
    ann = await world.account("ann")
    fan = await world.account("fan")
    uri = await world.track(ann, "tune")
    await replicated.wait_replayed(primary, replica)
    # Two AppViews on the same databases: two worker processes as far as routing is concerned.
    writer = await serve(primary, replica, replicated.primary_url, replica_max_lag=3600, read_your_writes_seconds=60)
    reader = await serve(primary, replica, replicated.primary_url, replica_max_lag=3600, read_your_writes_seconds=60)
    await wait_until(lambda: _true(router_of(reader).writers.listening), "the reader to listen")

    await replica.execute("SELECT pg_wal_replay_pause()")
    resp = await writer.post("/xrpc/" + PLAY, json={"track": uri}, headers=fan.auth(PLAY))
    assert resp.status == 200, await resp.text()
    await wait_until(lambda: _true(router_of(reader).writers.recent(fan.did)), "the write notification")

    plays = f"/xrpc/fm.plyr.stats.getTrackPlays?uri={uri}"
    own = await reader.get(plays, headers=fan.auth("fm.plyr.stats.getTrackPlays"))
    assert (await own.json())["total"] == 1  # the fan's read: from the primary
    other = await reader.get(plays)
    assert (await other.json())["total"] == 0  # anyone else: the replica, paused before the play
    # Another viewer who wrote nothing is read from the replica too.
    assert not router_of(reader).writers.recent(ann.did)


async def test_a_replica_dying_under_load_never_fails_a_request(
    serve: Any, plc: Plc, template: str, pair: StreamingPair
) -> None:
    # A pair of its own: this one is stopped mid-run.
    doomed = start_streaming_pair()
    try:
        conn = await db.connect(doomed.primary.url)
        await apply_migrations(conn)
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()")
        await conn.close()
        primary = await db.create_pool(doomed.primary.url, CoreSettings.from_env(), min_size=1, max_size=5)
        replica = await db.create_pool(doomed.replica.url, CoreSettings.from_env(), min_size=1, max_size=5)
        try:
            await wait_until(lambda: _replayed(replica, lsn), "the migrations on the replica")
            world = World(primary, plc)
            ann = await world.account("ann")
            await world.track(ann, "tune")
            client = await serve(primary, replica, doomed.primary.url, replica_max_lag=3600)
            statuses: list[int] = []

            async def load() -> None:
                while len(statuses) < 400:
                    resp = await client.get(LATEST)
                    statuses.append(resp.status)
                    await resp.read()

            loaders = [asyncio.create_task(load()) for _ in range(8)]
            await wait_until(lambda: _true(len(statuses) >= 50), "requests before the kill")
            doomed.replica.stop(immediate=True)
            await asyncio.gather(*loaders)
            assert set(statuses) == {200}
            assert not router_of(client).replicas[0].usable
        finally:
            await primary.close()
            await replica.close()
    finally:
        doomed.stop()


async def _replayed(replica: asyncpg.Pool, lsn: str) -> bool:
    return bool(await replica.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn))
