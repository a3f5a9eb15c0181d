"""Live sources on loopback: websocket reconnects resume from the cursor, half-open connections
are detected, and a standby indexer takes over when the active one loses its lock."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import orjson
import pytest

from core.backoff import Backoff
from indexer.consumer import Consumer
from indexer.ha import LeadershipLost, run_as_leader
from indexer.service import run_indexer
from indexer.settings import IndexerSettings
from indexer.sources import JetstreamSource, RelaySource
from indexer.verify import Verifier
from indexer.writer import default_lexicons
from tests.integration.indexer.firehose_server import Blackhole, FirehoseServer
from tests.support.frames import (
    MiniRepo,
    commit_frame,
    error_frame,
    like_record,
    post_record,
    track_record,
)
from tests.support.rkeys import tid_key

ROOT = Path(__file__).resolve().parents[3]
ALICE = "did:plc:alice234567abcdefghijklm"
SETTINGS = IndexerSettings(
    source="relay", relay_url="", jetstream_url="", verify=False, metrics_port=0,
    batch_size=50, batch_delay=0.05, standby_poll=0.05,
)  # fmt: skip


@pytest.fixture
async def firehose() -> AsyncIterator[FirehoseServer]:
    server = FirehoseServer()
    await server.start()
    yield server
    await server.stop()


async def eventually(check: Callable[[], object], limit: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def publish_tracks(server: FirehoseServer, repo: MiniRepo, first_seq: int, n: int) -> None:
    for i in range(n):
        seq = first_seq + i
        if seq % 3 == 0:  # some frames that are not ours
            parts = repo.commit([("create", "app.bsky.feed.post", f"3kp{seq}", post_record("x"))])
        else:
            parts = repo.commit([("create", "fm.plyr.track", tid_key(f"3kt{seq}"), track_record(f"T{seq}"))])
        server.publish(seq, commit_frame(seq, parts))


async def test_reconnect_resumes_from_cursor(pool: asyncpg.Pool, database_url: str, firehose: FirehoseServer) -> None:
    repo = MiniRepo(ALICE)
    publish_tracks(firehose, repo, 1, 30)
    firehose.drop_after = [10, 5]  # the first two connections die mid-stream
    firehose.before = [[], [], [error_frame("ConsumerTooSlow", "slow")]]
    source = RelaySource(firehose.url, backoff=Backoff(0.01, 0.05))
    task = asyncio.create_task(run_indexer(database_url, pool, SETTINGS, source, verify=False, resolve_handles=False))
    try:
        expected = sum(1 for s in range(1, 31) if s % 3 != 0)
        await eventually(lambda: _count(pool, "tracks", expected))
        await eventually(lambda: _cursor_is(pool, source.name, 30))
        publish_tracks(firehose, repo, 31, 5)
        await eventually(lambda: _cursor_is(pool, source.name, 35))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert firehose.cursors[0] is None and firehose.cursors[1] == 10 and firehose.cursors[2] == 15
    assert await pool.fetchval("SELECT count(*) FROM tracks") == sum(1 for s in range(1, 36) if s % 3 != 0)


async def test_half_open_connection_is_detected(pool: asyncpg.Pool, database_url: str, firehose: FirehoseServer) -> None:
    proxy = Blackhole(firehose.port)
    await proxy.start()
    repo = MiniRepo(ALICE)
    publish_tracks(firehose, repo, 1, 4)
    source = RelaySource(f"ws://127.0.0.1:{proxy.port}", backoff=Backoff(0.01, 0.05))
    source.ping_interval = source.ping_timeout = 0.3
    task = asyncio.create_task(run_indexer(database_url, pool, SETTINGS, source, verify=False, resolve_handles=False))
    try:
        await eventually(lambda: _cursor_is(pool, source.name, 4))
        proxy.silent = True  # the connection stays open but nothing gets through
        publish_tracks(firehose, repo, 5, 2)
        await asyncio.sleep(1.5)
        assert not await _cursor_is(pool, source.name, 6)
        proxy.silent = False
        await eventually(lambda: _cursor_is(pool, source.name, 6))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await proxy.stop()
    assert len(firehose.cursors) >= 2 and firehose.cursors[-1] == 4


async def test_standby_takes_over(pool: asyncpg.Pool, database_url: str, firehose: FirehoseServer) -> None:
    """Two indexers on one stream: one consumes, one waits; kill the active one's lock
    connection and the standby continues from the stored cursor, counts exact."""
    alice = MiniRepo(ALICE)
    track = alice.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record())])
    firehose.publish(1, commit_frame(1, track))
    subject = f"at://{ALICE}/fm.plyr.track/3ktcx22222222"
    likers = [MiniRepo(f"did:plc:liker{i:02d}234567abcdefghij") for i in range(40)]
    seq = 1

    def publish_likes(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            seq += 1
            r = likers[seq % len(likers)]
            firehose.publish(seq, commit_frame(seq, r.commit([("create", "fm.plyr.like", tid_key(f"3kl{seq}"), like_record(subject))])))

    publish_likes(20)
    lock_conns: dict[str, asyncpg.Connection] = {}
    consumers: dict[str, Consumer] = {}

    def make(name: str) -> Callable[[], object]:
        source = RelaySource(firehose.url, backoff=Backoff(0.01, 0.05))
        consumer = Consumer(pool, source, lexicons=default_lexicons(), verifier=Verifier(None, verify_signatures=False), batch_size=5, batch_delay=0.05)
        consumers[name] = consumer

        def on_conn(conn: asyncpg.Connection) -> None:
            lock_conns[name] = conn

        return lambda: run_as_leader(database_url, source.name, consumer.run, poll=0.05, check=0.1, on_connection=on_conn)

    a = asyncio.create_task(make("a")())
    await eventually(lambda: _cursor_is(pool, firehose.url, 21))
    b = asyncio.create_task(make("b")())
    await asyncio.sleep(0.5)
    assert consumers["b"].decoder.frames == 0  # standby: not consuming
    lock_conns["a"].terminate()  # the active indexer's session dies
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(a, 10)
    publish_likes(30)
    try:
        await eventually(lambda: _cursor_is(pool, firehose.url, 51))
    finally:
        b.cancel()
        await asyncio.gather(b, return_exceptions=True)
    assert await pool.fetchval("SELECT count(*) FROM likes") == 50
    assert await pool.fetchval("SELECT like_count FROM track_counts WHERE subject_uri = $1", subject) == 50
    assert consumers["b"].decoder.frames > 0


async def test_jetstream_source(pool: asyncpg.Pool, database_url: str, firehose: FirehoseServer) -> None:
    subject = f"at://{ALICE}/fm.plyr.track/3ktcx22222222"

    def js(time_us: int, kind: str, **body: object) -> bytes:
        return orjson.dumps({"did": ALICE, "time_us": time_us, "kind": kind, **body})

    firehose.publish(1_000_001, js(1_000_001, "commit", commit={
        "rev": "3mbd3542kzc22", "operation": "create", "collection": "fm.plyr.track", "rkey": "3ktcx22222222",
        "record": track_record("Jet"), "cid": "bafyreicu4vgm6h6mfwsidyefpfrkxmrn6f2teo6v3ymiswqkxggggrvrci"}))
    firehose.publish(1_000_002, js(1_000_002, "commit", commit={
        "rev": "3mbd3542lzc22", "operation": "create", "collection": "fm.plyr.like", "rkey": "3klcx22222222",
        "record": like_record(subject), "cid": "bafyreicu4vgm6h6mfwsidyefpfrkxmrn6f2teo6v3ymiswqkxggggrvrci"}))
    firehose.publish(1_000_003, js(1_000_003, "account", account={"active": False, "status": "takendown", "did": ALICE, "seq": 5, "time": "2026-01-01T00:00:00Z"}))
    source = JetstreamSource(firehose.url, backoff=Backoff(0.01, 0.05))
    settings = dataclasses.replace(SETTINGS, source="jetstream")
    task = asyncio.create_task(run_indexer(database_url, pool, settings, source, verify=True, resolve_handles=False))
    try:
        await eventually(lambda: _cursor_is(pool, source.name, 1_000_003))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await pool.fetchval("SELECT title FROM tracks") == "Jet"
    assert await pool.fetchval("SELECT status FROM actors") == "takendown"
    assert source.connect_url(None).endswith(
        "wantedCollections=fm.plyr.%2A&wantedCollections=fm.teal.alpha.feed.play"
        "&wantedCollections=fm.teal.feed.play"
    )


async def _count(pool: asyncpg.Pool, table: str, n: int) -> bool:
    return await pool.fetchval(f"SELECT count(*) FROM {table}") == n


async def _cursor_is(pool: asyncpg.Pool, source: str, seq: int) -> bool:
    return await pool.fetchval("SELECT seq FROM cursors WHERE source = $1", source) == seq


async def test_capture_then_replay(pool: asyncpg.Pool, database_url: str, firehose: FirehoseServer, tmp_path) -> None:
    """`plyr capture` records the raw frames (zstd here); `plyr index --replay` indexes them."""
    import os
    import sys

    repo = MiniRepo(ALICE)
    publish_tracks(firehose, repo, 1, 12)
    out = tmp_path / "live.bin.zst"
    root = ROOT
    env = {**os.environ, "DATABASE_URL": database_url, "PLYR_PLC_URL": "http://127.0.0.1:9"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", "capture", firehose.url, str(out), "--limit", "12",
        cwd=root, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"captured 12 frames" in err
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", "index", "--replay", str(out), "--no-verify",
        cwd=root, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert await pool.fetchval("SELECT count(*) FROM tracks") == sum(1 for s in range(1, 13) if s % 3 != 0)
    assert await _cursor_is(pool, "capture:live.bin.zst", 12)
