"""`plyr index` as a real process against a loopback firehose: the `--cursor` start point is
stored before anything is consumed (a crash before the first commit resumes there, not at the
live tip), only by the process holding the stream lock; and the resync loop runs beside the
live consumer, fetching a repo marked by a `#sync` event from a local PLC/PDS stand-in."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg

from core import db
from indexer.ha import STREAM_LOCK_CLASS, stream_lock_key
from tests.integration.backfill.conftest import net  # noqa: F401 - fixture
from tests.integration.backfill.fake_network import FakeNetwork, random_did
from tests.integration.backfill.test_backfill_flow import index_of, plyr_repo, truth
from tests.integration.indexer.firehose_server import FirehoseServer
from tests.integration.indexer.test_indexer_crash import indexer_env, start, tail
from tests.support.frames import CommitParts, account_frame, sync_frame


async def wait_until(check, proc: asyncio.subprocess.Process, log: Path, within: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if proc.returncode is not None:
            raise AssertionError(f"indexer exited {proc.returncode}:\n{tail(log)}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached:\n{tail(log)}")
        await asyncio.sleep(0.1)


async def stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 20)


async def test_start_cursor_is_stored_before_consuming(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    server = FirehoseServer()
    await server.start()
    # Account deactivations of DIDs we do not index yet: each one is stored (a hidden actor)
    # in its own transaction, so which events were applied is visible per seq.
    dids = {seq: random_did() for seq in range(1, 11)}
    for seq, did in dids.items():
        server.publish(seq, account_frame(seq, did, False, "deactivated"))
    source = server.url
    log = tmp_path / "indexer.log"
    env = indexer_env(database_url, "http://127.0.0.1:9")
    lock = await db.connect(database_url)
    try:
        # Another indexer holds the stream: a standby with --cursor writes nothing.
        assert await lock.fetchval("SELECT pg_try_advisory_lock($1, $2)", STREAM_LOCK_CLASS, stream_lock_key(source))
        crash_env = {**env, "PLYR_CRASH_AT": "account_before_commit:1"}
        proc = await start(["index", "--url", source, "--cursor", "5"], crash_env, log)
        await wait_until(lambda: _logged(log, "standby"), proc, log)
        await asyncio.sleep(0.5)
        assert await pool.fetchval("SELECT count(*) FROM cursors") == 0
        assert server.cursors == []

        # It takes over, stores seq 5, and dies applying the first event (seq 6) uncommitted.
        await lock.execute("SELECT pg_advisory_unlock($1, $2)", STREAM_LOCK_CLASS, stream_lock_key(source))
        assert await asyncio.wait_for(proc.wait(), 30) == 137, tail(log)
        assert "crashing at account_before_commit #1" in tail(log)
        assert await pool.fetchval("SELECT seq FROM cursors WHERE source = $1", source) == 5
        assert server.cursors == [5]
        assert await pool.fetchval("SELECT count(*) FROM actors") == 0

        # A restart without --cursor resumes after 5: nothing before it, nothing after it lost.
        proc = await start(["index", "--url", source], env, log)
        await wait_until(
            lambda: _cursor_is(pool, source, 10), proc, log
        )
        assert await stop(proc) == 0, tail(log)
    finally:
        await lock.close()
        await server.stop()
    assert server.cursors == [5, 5]
    stored = {r["did"] for r in await pool.fetch("SELECT did FROM actors WHERE NOT visible")}
    assert stored == {dids[s] for s in range(6, 11)}


async def test_plyr_index_runs_the_resync_loop(
    pool: asyncpg.Pool, database_url: str, net: FakeNetwork, tmp_path: Path  # noqa: F811
) -> None:
    repo = plyr_repo(seed=3)
    net.host(repo)
    await pool.execute("INSERT INTO actors (did) VALUES ($1)", repo.did)  # a repo we index
    server = FirehoseServer()
    await server.start()
    parts = CommitParts(repo.did, repo.rev, None, repo.commit_cid, b"", [], repo.commit_block)
    server.publish(1, sync_frame(1, parts))
    log = tmp_path / "indexer.log"
    env = indexer_env(database_url, net.base, PLYR_RESYNC_INTERVAL_S="0.2")
    proc = await start(["index", "--url", server.url], env, log)
    try:
        async def resynced() -> bool:
            row = await pool.fetchrow("SELECT needs_resync, resync_reason FROM actors WHERE did = $1", repo.did)
            return bool(await index_of(pool, repo.did)) and not row["needs_resync"]

        await wait_until(resynced, proc, log)
        assert await stop(proc) == 0, tail(log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await server.stop()
    assert await index_of(pool, repo.did) == truth(repo)
    assert net.requests[("getRepo", repo.did)] == 1
    assert "#sync event at seq 1" in log.read_text()  # marked by the consumer, then fetched
    assert await pool.fetchval("SELECT status FROM backfill_repos WHERE did = $1", repo.did) == "done"


async def _logged(log: Path, text: str) -> bool:
    return text in tail(log)


async def _cursor_is(pool: asyncpg.Pool, source: str, seq: int) -> bool:
    return await pool.fetchval("SELECT seq FROM cursors WHERE source = $1", source) == seq
