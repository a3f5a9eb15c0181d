"""Media notices the indexer's mirror requests promptly: the writer's NOTIFY wakes the media
service's taker (JobEvents -> drain_forever), well before its poll would, and a request taken
twice queues one job."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg

from indexer.records import RecordOp
from indexer.writer import apply_batch, default_lexicons
from indexer.writer.outbox import MIRROR_OUTBOX_CHANNEL as INDEXER_CHANNEL
from media.events import JobEvents
from media.mirror_requests import MIRROR_OUTBOX_CHANNEL, drain_forever, take_all_requests
from tests.support.rkeys import tid_key

DID = "did:plc:mirrorrequestsaaaaaaaaaa"
BLOB = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def blob_op(rkey: str, rev: str) -> RecordOp:
    record = {
        "$type": "fm.plyr.track", "title": "Tone", "artist": "A", "fileType": "mp3",
        "audioBlob": {"$type": "blob", "ref": {"$link": BLOB}, "mimeType": "audio/mpeg", "size": 10},
        "createdAt": "2026-11-24T12:00:00.000Z",
    }  # fmt: skip
    return RecordOp("create", DID, "fm.plyr.track", tid_key(rkey), rev, f"bafyrei{rkey}", record)


async def jobs(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM media_jobs WHERE kind = 'mirror'"))


def test_both_sides_name_the_same_channel() -> None:
    assert INDEXER_CHANNEL == MIRROR_OUTBOX_CHANNEL


async def test_a_request_wakes_media_at_once(pool: asyncpg.Pool, database_url: str) -> None:
    events = JobEvents(database_url)
    await events.start()
    taker = asyncio.create_task(drain_forever(pool, events.mirror_requests, poll_s=60))
    try:
        await asyncio.sleep(0.2)  # the taker found nothing and waits
        started = time.monotonic()
        async with pool.acquire() as conn:
            await apply_batch(conn, [blob_op("3kreq1", "3kaaaaaaaab2")], lexicons=default_lexicons())
        while await jobs(pool) == 0:
            assert time.monotonic() - started < 10, "the request was not taken"
            await asyncio.sleep(0.05)
        assert time.monotonic() - started < 5  # the NOTIFY, not the 60 s poll
        assert await pool.fetchval("SELECT count(*) FROM mirror_outbox") == 0
    finally:
        taker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await taker
        await events.stop()


async def test_requests_for_one_blob_queue_one_job(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await apply_batch(conn, [blob_op("3kreq2", "3kaaaaaaaab2")], lexicons=default_lexicons())
        await apply_batch(conn, [blob_op("3kreq2", "3kaaaaaaaac2")], lexicons=default_lexicons())
    assert await pool.fetchval("SELECT count(*) FROM mirror_outbox") == 2
    assert await take_all_requests(pool) == 1
    assert await take_all_requests(pool) == 0
    assert await jobs(pool) == 1
