"""The job queue on real Postgres: claiming, leases, retries with backoff, failures, notifications."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

from core import db
from integration.media.conftest import MediaServer
from media import jobs
from media.job_context import JobContext, JobFailed
from media.jobs import LeaseLost
from media.worker import Worker


async def test_skip_locked_gives_each_job_to_one_worker(pool: asyncpg.Pool) -> None:
    ids = [await jobs.enqueue(pool, kind="k", owner=None, payload={"n": n}) for n in range(20)]
    claims = await asyncio.gather(*(jobs.claim(pool, worker=f"w{n}", lease_s=30) for n in range(25)))
    got = [c.id for c in claims if c is not None]
    assert sorted(got) == ids  # every job claimed exactly once; the 5 extra claims got nothing
    assert sum(c is None for c in claims) == 5


async def test_expired_lease_makes_the_job_claimable_again(pool: asyncpg.Pool) -> None:
    job_id = await jobs.enqueue(pool, kind="k", owner=None, payload={}, max_attempts=2)
    first = await jobs.claim(pool, worker="dead", lease_s=0.2)
    assert first is not None and first.id == job_id
    assert await jobs.claim(pool, worker="other", lease_s=30) is None  # leased
    await asyncio.sleep(0.3)
    second = await jobs.claim(pool, worker="other", lease_s=30)
    assert second is not None and second.id == job_id and second.attempts == 2
    # the dead worker's late report is refused: the job is someone else's now
    try:
        await jobs.report(pool, first, worker="dead", lease_s=30, progress=0.5)
        raise AssertionError("report should have failed")
    except LeaseLost:
        pass
    assert not await jobs.complete(pool, first, worker="dead", result={})
    assert await jobs.complete(pool, second, worker="other", result={"ok": 1})
    done = await jobs.get_job(pool, job_id)
    assert done is not None and done.status == "done" and done.result == {"ok": 1}


async def test_lease_expiry_with_no_attempts_left_fails_the_job(pool: asyncpg.Pool) -> None:
    job_id = await jobs.enqueue(pool, kind="k", owner=None, payload={}, max_attempts=1)
    assert await jobs.claim(pool, worker="dead", lease_s=0.1) is not None
    await asyncio.sleep(0.2)
    assert await jobs.claim(pool, worker="other", lease_s=30) is None
    job = await jobs.get_job(pool, job_id)
    assert job is not None and job.status == "failed" and "lease expired" in (job.error or "")


async def test_retries_with_backoff_then_fails_keeping_the_error(media_server: MediaServer, pool: asyncpg.Pool) -> None:
    calls: list[int] = []

    async def flaky(ctx: JobContext) -> dict[str, Any]:
        calls.append(ctx.job.attempts)
        raise RuntimeError(f"storage hiccup #{ctx.job.attempts}")

    worker = Worker(media_server.ctx, name="w", handlers={"flaky": flaky})
    job_id = await jobs.enqueue(pool, kind="flaky", owner=None, payload={}, max_attempts=3)
    assert await worker.run_once()
    job = await jobs.get_job(pool, job_id)
    assert job is not None and job.status == "queued" and job.error == "storage hiccup #1"
    delay = (job.run_after - job.updated_at).total_seconds()
    assert abs(delay - jobs.backoff_s(1)) < 1
    assert not await worker.run_once()  # not due yet
    for _ in range(2):
        await pool.execute("UPDATE media_jobs SET run_after = now() WHERE id = $1", job_id)
        assert await worker.run_once()
    job = await jobs.get_job(pool, job_id)
    assert job is not None and job.status == "failed" and job.error == "storage hiccup #3"
    assert calls == [1, 2, 3] and job.finished_at is not None
    assert jobs.backoff_s(2) == 2 * jobs.backoff_s(1)


async def test_permanent_failure_is_not_retried(media_server: MediaServer, pool: asyncpg.Pool) -> None:
    async def bad(ctx: JobContext) -> dict[str, Any]:
        raise JobFailed("the input is broken")

    worker = Worker(media_server.ctx, name="w", handlers={"bad": bad})
    job_id = await jobs.enqueue(pool, kind="bad", owner=None, payload={}, max_attempts=5)
    assert await worker.run_once()
    job = await jobs.get_job(pool, job_id)
    assert job is not None and (job.status, job.attempts, job.error) == ("failed", 1, "the input is broken")


async def test_heartbeat_keeps_a_long_job_and_lost_lease_cancels_it(media_server: MediaServer, pool: asyncpg.Pool) -> None:
    import dataclasses

    ctx = dataclasses.replace(media_server.ctx, settings=dataclasses.replace(media_server.ctx.settings, job_lease_s=0.6))
    cancelled = asyncio.Event()

    async def slow(jctx: JobContext) -> dict[str, Any]:
        await asyncio.sleep(1.5)  # longer than the lease: only the heartbeat keeps it
        return {"slept": True}

    job_id = await jobs.enqueue(pool, kind="slow", owner=None, payload={})
    await Worker(ctx, name="w", handlers={"slow": slow}).run_once()
    job = await jobs.get_job(pool, job_id)
    assert job is not None and job.status == "done" and job.attempts == 1

    async def stuck(jctx: JobContext) -> dict[str, Any]:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    job_id = await jobs.enqueue(pool, kind="stuck", owner=None, payload={})
    task = asyncio.create_task(Worker(ctx, name="w2", handlers={"stuck": stuck}).run_once())
    await asyncio.sleep(0.3)
    await pool.execute("UPDATE media_jobs SET worker = 'thief' WHERE id = $1", job_id)  # stolen
    await asyncio.wait_for(task, 5)
    assert cancelled.is_set()


async def test_dedupe_key_reuses_live_job(pool: asyncpg.Pool) -> None:
    a = await jobs.enqueue_blob_mirror(pool, track_uri="at://did:plc:x/fm.plyr.track/1", did="did:plc:x", blob_cid="bafkreia", mime_type="audio/wav")
    b = await jobs.enqueue_blob_mirror(pool, track_uri="at://did:plc:x/fm.plyr.track/1", did="did:plc:x", blob_cid="bafkreia", mime_type="audio/wav")
    c = await jobs.enqueue_blob_mirror(pool, track_uri="at://did:plc:x/fm.plyr.track/1", did="did:plc:x", blob_cid="bafkreib", mime_type="audio/wav")
    assert a == b != c


async def test_enqueue_in_a_rolled_back_transaction_leaves_no_job(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await jobs.enqueue_blob_mirror(conn, track_uri="at://x/y/z", did="did:plc:x", blob_cid="bafkreia", mime_type="audio/mpeg")
        await tx.rollback()
    assert await pool.fetchval("SELECT count(*) FROM media_jobs") == 0


async def test_state_changes_are_notified(pool: asyncpg.Pool, database_url: str) -> None:
    conn = await db.connect(database_url)
    seen: list[dict[str, Any]] = []
    await conn.add_listener(jobs.CHANNEL, lambda *a: seen.append(orjson.loads(a[3])))
    try:
        job_id = await jobs.enqueue(pool, kind="k", owner=None, payload={})
        job = await jobs.claim(pool, worker="w", lease_s=30)
        assert job is not None
        await jobs.report(pool, job, worker="w", lease_s=30, progress=0.5, phase="halfway")
        await jobs.complete(pool, job, worker="w", result={})
        for _ in range(50):
            if len(seen) >= 3:
                break
            await asyncio.sleep(0.05)
        assert [(e["id"], e["status"]) for e in seen] == [(job_id, "running"), (job_id, "running"), (job_id, "done")]
        assert seen[1]["progress"] == 0.5 and seen[1]["phase"] == "halfway"
    finally:
        await conn.close()



async def test_shutdown_mid_job_gives_the_job_back_and_cleans_up(media_server: MediaServer, pool: asyncpg.Pool) -> None:
    started = asyncio.Event()
    cleaned = asyncio.Event()

    async def long(ctx: JobContext) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.set()  # the handler's own cleanup (temp files, partial objects) runs
        return {}

    job_id = await jobs.enqueue(pool, kind="long", owner=None, payload={}, max_attempts=1)
    task = asyncio.create_task(Worker(media_server.ctx, name="w", handlers={"long": long}).run())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert cleaned.is_set()
    job = await jobs.get_job(pool, job_id)
    assert job is not None and (job.status, job.attempts, job.worker) == ("queued", 0, None)
    # its one attempt is still there: the next worker runs it
    claimed = await jobs.claim(pool, worker="next", lease_s=30)
    assert claimed is not None and claimed.id == job_id
