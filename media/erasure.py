"""Media's part of an account data erasure (issue 17; the request: appview/erasure.py).

The AppView records each request in `erasure_requests` (its own part done) and NOTIFYs
ERASURE_CHANNEL. Every media process runs `erase_forever`: woken by that NOTIFY, and every
POLL_S seconds, it takes the requests that have no part of media's yet, or whose part stopped
half way, and for each DID, in one transaction under the erasure's per-DID lock:

- finds the objects the account uploaded (`media_objects.uploaded_by`: its uploads and our copies
  of its PDS blobs, which media stores as the track author's); an object another account's track
  plays or shows (audio or image URL, a rendition's URL, a blob copy for that track, the same
  blob), or another account uploaded too (a reader of its job), is KEPT and handed to that
  account (`uploaded_by`); the others are deleted with their renditions (cascade);
- deletes our copies of the account's tracks' blobs (`media_mirrors` rows under its
  `at://<did>/`), the fingerprints of its tracks and of the deleted objects with their index
  terms, the copyright scans of the deleted objects (a scan a moderator reviewed stays: it is
  the evidence of a decision; the scans of kept objects stop naming its tracks), its rows of
  `copyright_uploaders` (a kept object's first artist becomes the next who brought it), the account's
  jobs (exports, uploads, mirrors: their readers go with them), the jobs about the deleted
  objects, its reader rows of other accounts' jobs, and the mirror requests still waiting for it
  (`mirror_outbox`, which media consumes);
- records its part, `deleting`, with the storage keys to delete (the objects', the renditions'
  and the export zips').

Then the stored files are deleted, each under the orphan sweep's per-key lock and only when no
row names the key any more (an upload of the same bytes since keeps it), and the part becomes
`done`. A crash in between leaves the part `deleting`: the next pass deletes the keys again
(deleting a missing object is no error) and finishes it. A running job of a deleted object may
still store a file after the erasure (a transcode half done); no row names it, so the orphan
sweep deletes it after its grace.

Cost: an erasure reads the account's rows by index (uploader, job owner, fingerprint subjects);
finding whether another account's track uses an object, the account's blob copies and the
jobs about its objects scans `tracks`' URL columns, `media_mirrors` and `media_jobs` once each.
Erasures are rare; nothing on a request's path pays for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from core.db import Connection
from media.storage import Storage, StorageError
from media.sweep import delete_if_unreferenced

log = logging.getLogger("plyr.media.erasure")

# appview/erasure.py NOTIFYs this name and takes the same per-DID lock.
ERASURE_CHANNEL = "plyr_erasure_requests"
LOCK_CLASS = 0x706C7965
POLL_S = 10.0
BATCH = 50

_PENDING = """
SELECT r.id, r.did FROM erasure_requests r
LEFT JOIN erasure_media_parts p ON p.request_id = r.id
WHERE p.request_id IS NULL OR p.status = 'deleting'
ORDER BY r.id LIMIT $1
"""

# The account's objects, and for each whether another account uses it (and who: the new owner).
_OBJECTS = """
WITH cand AS (
    SELECT sha256, kind, storage_key, url, blob_cid FROM media_objects WHERE uploaded_by = $1
), urls AS (
    SELECT c.sha256, c.url FROM cand c
    UNION ALL
    SELECT r.source_sha256, r.url FROM media_renditions r JOIN cand c ON c.sha256 = r.source_sha256
), users AS (
    SELECT u.sha256, t.did FROM urls u JOIN tracks t ON t.audio_url = u.url WHERE t.did <> $1
    UNION ALL
    SELECT u.sha256, t.did FROM urls u JOIN tracks t ON t.image_url = u.url WHERE t.did <> $1
    UNION ALL
    SELECT u.sha256, t.did FROM urls u JOIN media_mirrors m ON m.url = u.url
    JOIN tracks t ON t.uri = m.track_uri WHERE t.did <> $1
    UNION ALL
    SELECT c.sha256, t.did FROM cand c JOIN tracks t ON t.audio_blob_cid = c.blob_cid WHERE t.did <> $1
    UNION ALL
    SELECT c.sha256, jr.did FROM cand c JOIN media_jobs j ON j.dedupe_key = c.sha256
    JOIN media_job_readers jr ON jr.job_id = j.id WHERE jr.did <> $1
)
SELECT c.sha256, c.kind, c.storage_key, (SELECT min(us.did) FROM users us WHERE us.sha256 = c.sha256) AS other
FROM cand c
"""


async def _count(conn: Connection, sql: str, *args: Any) -> int:
    status: str = await conn.execute(sql, *args)
    return int(status.split()[-1])


async def _delete_rows(conn: Connection, did: str) -> dict[str, Any]:
    """Delete media's rows of `did` (see the module doc), in the caller's transaction; returns
    the receipt: removed and kept counts, and the storage keys to delete."""
    prefix = f"at://{did}/"
    objects = await conn.fetch(_OBJECTS, did)
    gone = [r["sha256"] for r in objects if r["other"] is None]
    kept = [(r["sha256"], r["other"]) for r in objects if r["other"] is not None]
    keys = [r["storage_key"] for r in objects if r["other"] is None]
    keys += [r["storage_key"] for r in await conn.fetch(
        "SELECT storage_key FROM media_renditions WHERE source_sha256 = ANY($1::text[])", gone)]  # fmt: skip
    keys += [r["key"] for r in await conn.fetch(
        """SELECT result ->> 'key' AS key FROM media_jobs
           WHERE owner = $1 AND kind = 'export' AND result ? 'key'
             AND NOT coalesce((result ->> 'expired')::boolean, false)""", did)]  # fmt: skip
    removed: dict[str, int] = {}

    fingerprints = [r["id"] for r in await conn.fetch(
        """SELECT id FROM audio_fingerprints WHERE audio_sha256 = ANY($1::text[])
           UNION SELECT id FROM audio_fingerprints WHERE starts_with(track_uri, $2)""", gone, prefix)]  # fmt: skip
    await conn.execute("DELETE FROM audio_fingerprint_index WHERE fingerprint_id = ANY($1::bigint[])", fingerprints)
    removed["fingerprints"] = await _count(conn, "DELETE FROM audio_fingerprints WHERE id = ANY($1::bigint[])", fingerprints)
    reviewed = "EXISTS (SELECT 1 FROM copyright_reviews v WHERE v.scan_id = s.id)"
    removed["copyrightScans"] = await _count(
        conn, f"DELETE FROM copyright_scans s WHERE s.sha256 = ANY($1::text[]) AND NOT {reviewed}", gone)  # fmt: skip
    kept_scans = await conn.fetchval(
        f"SELECT count(*) FROM copyright_scans s WHERE s.sha256 = ANY($1::text[]) AND {reviewed}", gone)  # fmt: skip
    await conn.execute(
        f"UPDATE copyright_scans s SET track_uri = NULL WHERE starts_with(s.track_uri, $1) AND NOT {reviewed}", prefix)  # fmt: skip
    # who brought which audio (migrations/0045): the account no more; the deleted objects' rows go
    await conn.execute("DELETE FROM copyright_uploaders WHERE did = $1 OR sha256 = ANY($2::text[])", did, gone)

    removed["jobReaders"] = await _count(conn, "DELETE FROM media_job_readers WHERE did = $1", did)
    removed["exports"] = await conn.fetchval(
        "SELECT count(*) FROM media_jobs WHERE owner = $1 AND kind = 'export'", did)  # fmt: skip
    removed["jobs"] = await _count(
        conn,
        """DELETE FROM media_jobs WHERE owner = $1 OR dedupe_key = ANY($2::text[])
               OR payload ->> 'sha256' = ANY($2::text[]) OR starts_with(payload ->> 'track_uri', $3)""",
        did, gone, prefix,
    )  # fmt: skip
    removed["blobCopies"] = await _count(conn, "DELETE FROM media_mirrors WHERE starts_with(track_uri, $1)", prefix)
    removed["mirrorRequests"] = await _count(conn, "DELETE FROM mirror_outbox WHERE did = $1", did)
    removed["renditions"] = await conn.fetchval(
        "SELECT count(*) FROM media_renditions WHERE source_sha256 = ANY($1::text[])", gone)  # fmt: skip
    kinds = await conn.fetch(
        "DELETE FROM media_objects WHERE sha256 = ANY($1::text[]) RETURNING kind", gone)  # renditions: cascade
    removed["audioObjects"] = sum(1 for r in kinds if r["kind"] == "audio")
    removed["imageObjects"] = sum(1 for r in kinds if r["kind"] == "image")
    for sha, other in kept:
        await conn.execute("UPDATE media_objects SET uploaded_by = $2 WHERE sha256 = $1", sha, other)
    return {
        "removed": removed,
        "kept": {"uploadsAnotherAccountUses": len(kept), "reviewedCopyrightScans": int(kept_scans)},
        "storageKeys": sorted(set(keys)),
    }


async def erase(pool: asyncpg.Pool, storage: Storage, request_id: int, did: str) -> dict[str, Any] | None:
    """Do (or finish) media's part of request `request_id`; returns its receipt, None when it
    was done already. StorageError leaves the part `deleting`, to be finished later."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1::int, hashtext($2))", LOCK_CLASS, did)
        part = await conn.fetchrow(
            "SELECT status, receipt FROM erasure_media_parts WHERE request_id = $1", request_id
        )
        if part is not None and part["status"] == "done":
            return None
        if part is None:
            receipt = await _delete_rows(conn, did)
            await conn.execute(
                "INSERT INTO erasure_media_parts (request_id, status, receipt) VALUES ($1, 'deleting', $2)",
                request_id, receipt,
            )  # fmt: skip
        else:
            receipt = part["receipt"]
    deleted: list[str] = []
    for key in receipt["storageKeys"]:
        # Under the sweep's lock, and not if a row names the key again (the same bytes uploaded since).
        if await delete_if_unreferenced(pool, storage, key):
            deleted.append(key)
    if len(deleted) < len(receipt["storageKeys"]):
        receipt["kept"]["storedAgainSince"] = len(receipt["storageKeys"]) - len(deleted)
    receipt["storageKeys"] = deleted
    receipt["removed"]["storedFiles"] = len(deleted)
    await pool.execute(
        """UPDATE erasure_media_parts SET status = 'done', receipt = $2, finished_at = now()
           WHERE request_id = $1 AND status = 'deleting'""",
        request_id, receipt,
    )  # fmt: skip
    log.info("account data erased (media part)",
             extra={"did": did, "request": request_id, "removed": receipt["removed"], "kept": receipt["kept"]})  # fmt: skip
    return receipt


async def erase_pending(pool: asyncpg.Pool, storage: Storage) -> int:
    """Do every pending part; returns how many were finished. A part whose storage fails stays
    pending (logged) and the others go on."""
    finished = 0
    while True:
        rows = await pool.fetch(_PENDING, BATCH)
        progressed = 0
        for row in rows:
            try:
                if await erase(pool, storage, row["id"], row["did"]) is not None:
                    finished += 1
                    progressed += 1
            except StorageError as exc:
                log.warning("erasure: stored files not deleted yet", extra={"request": row["id"], "error": str(exc)})
        if len(rows) < BATCH or progressed == 0:
            return finished


async def erase_forever(pool: asyncpg.Pool, storage: Storage, wake: asyncio.Event, *, poll_s: float = POLL_S) -> None:
    """Media's parts of erasure requests, whenever the AppView announces one (`wake`), and
    every `poll_s` seconds (a missed notification, a part left `deleting`)."""
    while True:
        wake.clear()
        try:
            await erase_pending(pool, storage)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("erasure pass failed")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), poll_s)
