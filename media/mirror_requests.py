"""Mirror requests from the indexer become `mirror` jobs.

The indexer writes a row to `mirror_outbox` with every track version that carries a PDS blob
(indexer/writer/outbox.py), and NOTIFYs MIRROR_OUTBOX_CHANNEL at commit. `take_requests` deletes
a batch of rows and, in the same transaction, queues one `mirror` job per track and blob still
wanted: the track still carries that blob and its actor is visible, we hold no copy of it for
this track yet (`media_mirrors`), and no job for it is live (the job queue's dedupe). Taking a
request twice therefore does nothing more, and a crash between the two leaves the rows in place.

`drain_forever` runs in the media service: woken by the NOTIFY (the same latency as a job's
own NOTIFY), and every POLL_S seconds in case a notification was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from media.jobs import enqueue_blob_mirrors

log = logging.getLogger("plyr.media.mirror")

# indexer/writer/outbox.py NOTIFYs the same name.
MIRROR_OUTBOX_CHANNEL = "plyr_mirror_outbox"
BATCH = 500
POLL_S = 5.0

# Without SKIP LOCKED: a second taker waits for the first to commit, so when it returns, every
# request committed before it started has become a job (tests rely on that).
_TAKE = """
WITH taken AS (
  DELETE FROM mirror_outbox
  WHERE id IN (SELECT id FROM mirror_outbox ORDER BY id LIMIT $1 FOR UPDATE)
  RETURNING track_uri, did, blob_cid, mime_type
)
SELECT DISTINCT ON (o.track_uri, o.blob_cid) o.track_uri, o.did, o.blob_cid, o.mime_type,
       t.uri IS NOT NULL AND coalesce(a.visible, true)
       AND NOT EXISTS (SELECT 1 FROM media_mirrors m
                       WHERE m.track_uri = o.track_uri AND m.blob_cid = o.blob_cid) AS wanted
FROM taken o
LEFT JOIN tracks t ON t.uri = o.track_uri AND t.audio_blob_cid = o.blob_cid
LEFT JOIN actors a ON a.did = t.did
ORDER BY o.track_uri, o.blob_cid
"""


async def take_requests(pool: asyncpg.Pool, *, batch: int = BATCH) -> tuple[int, int]:
    """Turn up to `batch` requests into jobs; returns (distinct requests taken, jobs queued)."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_TAKE, batch)
        wanted = [(r["track_uri"], r["did"], r["blob_cid"], r["mime_type"]) for r in rows if r["wanted"]]
        queued = await enqueue_blob_mirrors(conn, wanted)
    return len(rows), queued


async def take_all_requests(pool: asyncpg.Pool) -> int:
    """Take requests until none is left; returns the jobs queued."""
    queued = 0
    while True:
        taken, added = await take_requests(pool)
        queued += added
        if taken == 0:
            return queued


async def drain_forever(pool: asyncpg.Pool, wake: asyncio.Event, *, poll_s: float = POLL_S) -> None:
    """Take requests whenever the indexer announces some (`wake`), and every `poll_s` seconds."""
    while True:
        wake.clear()
        try:
            queued = await take_all_requests(pool)
            if queued:
                log.info("mirror jobs queued", extra={"jobs": queued})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("taking mirror requests failed")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), poll_s)
