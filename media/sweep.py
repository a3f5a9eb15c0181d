"""The orphan sweep: delete stored objects that no row refers to.

Every object is stored before the row that records it: an upload stores its bytes, then
inserts media_objects; a transcode stores the MP3, then media_renditions; an export stores its
zip, then completes its job with the key. A process that dies between the two steps leaves an
object that nothing refers to and nothing would ever delete. The sweep lists the storage a page
at a time (never the whole listing in memory) and deletes an object when it is

- under a prefix this service writes (OWNED_PREFIXES): nothing else in a shared bucket is touched;
- older than the grace period (PLYR_MEDIA_ORPHAN_GRACE_S, 1 h): an upload between its two steps
  is younger than that;
- referred to by no row: media_objects.storage_key, media_renditions.storage_key, or the key in
  the result of an export job that has not expired (the only tables that name storage keys).

Writes that never completed (local `.partial` files, S3 multipart uploads neither completed nor
aborted) older than the grace period are discarded too, and so are the `plyr-*` temporary files
a crashed process left in its own PLYR_DATA_DIR/tmp (`sweep_temp_files`, run by every media
process on its own folder, since that folder is not shared).

Content-named keys can be reused: an upload whose bytes match an orphan finds the key already
stored and keeps it, while the sweep may have decided to delete it. Both sides take a Postgres
advisory lock on the key: the sweep (exclusive) checks the references again and deletes under
it; a writer (shared, `keep_stored`) makes sure the object is there, storing it again if not, in
the transaction that inserts its row. A row is thus never committed for an object being deleted.
The same check-then-delete (`delete_if_unreferenced`) undoes the objects of a failed upload, so
that it cannot delete an object a concurrent upload of the same bytes has just recorded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from prometheus_client import Counter

from core.db import Connection
from media.storage import LIST_PAGE, Storage, StorageError

log = logging.getLogger("plyr.media.sweep")

# The key spaces this service writes (ingest.audio_key / image_key, exports.run_export).
OWNED_PREFIXES = ("audio/", "images/", "exports/")

# classids in the two-int advisory lock space: "plym" per object key, "plys" for the one sweeper.
OBJECT_LOCK_CLASS = 0x706C796D
SWEEP_LOCK_CLASS = 0x706C7973

SWEEP_DELETED = Counter(
    "plyr_media_sweep_deleted_total",
    "Unreferenced storage objects (object), interrupted writes (unfinished_write) and leftover"
    " temporary files (temp_file) the sweep deleted",
    ["what"],
)
SWEEP_DELETED_BYTES = Counter("plyr_media_sweep_deleted_bytes_total", "Bytes of the orphan objects the sweep deleted")
SWEEP_FAILED = Counter("plyr_media_sweep_failures_total", "Deletes the sweep tried and the storage refused", ["what"])

# One index lookup per key in each table (= ANY on the unique keys and the export-key index).
_REFERENCED = """
SELECT o.storage_key AS k FROM media_objects o WHERE o.storage_key = ANY($1::text[])
UNION
SELECT r.storage_key FROM media_renditions r WHERE r.storage_key = ANY($1::text[])
UNION
SELECT j.result ->> 'key' FROM media_jobs j
WHERE j.kind = 'export' AND j.result ->> 'key' = ANY($1::text[])
  AND NOT coalesce((j.result ->> 'expired')::boolean, false)
"""


@dataclass
class SweepReport:
    dry_run: bool
    grace_s: float
    scanned: int = 0            # objects listed
    young: int = 0              # within the grace period: not looked at
    referenced: int = 0         # old enough, but a row refers to them
    orphans: int = 0            # deleted (dry run: would be)
    orphan_bytes: int = 0
    unfinished_writes: int = 0  # interrupted writes discarded (dry run: would be)
    failed: int = 0             # deletes the storage refused (retried next sweep)

    def summary(self) -> dict[str, object]:
        return dict(self.__dict__)


def object_lock_key(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big", signed=True)


async def referenced_keys(conn: Connection | asyncpg.Pool, keys: Sequence[str]) -> set[str]:
    """The keys among `keys` that some row refers to."""
    if not keys:
        return set()
    return {row["k"] for row in await conn.fetch(_REFERENCED, list(keys))}


async def keep_stored(
    conn: Connection, storage: Storage, objects: Sequence[tuple[str, Path, str]]
) -> list[str]:
    """In the transaction that inserts the rows of `objects` (key, local file, content type):
    hold their keys against the sweep until commit and store again any that is missing (the sweep
    deleted it as an orphan since we found it). Returns the keys stored again."""
    keys = sorted({key for key, _, _ in objects})
    await conn.execute(
        "SELECT pg_advisory_xact_lock_shared($1::int, k) FROM unnest($2::int[]) AS k",
        OBJECT_LOCK_CLASS, [object_lock_key(k) for k in keys],
    )
    stored_again = []
    for key, path, content_type in objects:
        if not await storage.exists(key):
            log.info("object deleted by the orphan sweep meanwhile: storing it again", extra={"key": key})
            await storage.put_file(key, path, content_type)
            stored_again.append(key)
    return stored_again


async def delete_if_unreferenced(pool: asyncpg.Pool, storage: Storage, key: str) -> bool:
    """Delete `key` from storage unless a row refers to it; True when deleted."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", OBJECT_LOCK_CLASS, object_lock_key(key))
        if await referenced_keys(conn, [key]):
            return False
        await storage.delete(key)
    return True


async def sweep(
    pool: asyncpg.Pool,
    storage: Storage,
    *,
    grace_s: float,
    dry_run: bool = False,
    now: float | None = None,
    page_size: int = LIST_PAGE,
    on_orphan: Callable[[str, int, float], object] | None = None,
) -> SweepReport:
    """Delete the orphans (and interrupted writes) older than `grace_s`; see the module doc.

    `now` (seconds since the epoch) stands for the current time; `on_orphan(key, size, age_s)`
    is told about each orphan found (the CLI prints them on a dry run). A storage error on one
    delete is counted and the sweep goes on; listing or database errors end it.
    """
    report = SweepReport(dry_run=dry_run, grace_s=grace_s)
    timer = time.monotonic()
    started = time.time() if now is None else now
    cutoff = started - grace_s
    for prefix in OWNED_PREFIXES:
        async for page in storage.list_objects(prefix, page_size):
            report.scanned += len(page)
            old = [obj for obj in page if obj.modified < cutoff]
            report.young += len(page) - len(old)
            refs = await referenced_keys(pool, [obj.key for obj in old])
            for obj in old:
                if obj.key in refs:
                    report.referenced += 1
                    continue
                age_s = round(started - obj.modified, 1)
                fields = {"key": obj.key, "size": obj.size, "age_s": age_s, "storage": storage.name}
                if not dry_run:
                    try:
                        if not await delete_if_unreferenced(pool, storage, obj.key):
                            report.referenced += 1  # recorded since the page was checked
                            continue
                    except StorageError as exc:
                        report.failed += 1
                        SWEEP_FAILED.labels("object").inc()
                        log.warning("orphan not deleted", extra=fields | {"error": str(exc)})
                        continue
                    SWEEP_DELETED.labels("object").inc()
                    SWEEP_DELETED_BYTES.inc(obj.size)
                report.orphans += 1
                report.orphan_bytes += obj.size
                log.info("orphan would be deleted" if dry_run else "orphan deleted", extra=fields)
                if on_orphan is not None:
                    on_orphan(obj.key, obj.size, age_s)
        async for writes in storage.list_unfinished_writes(prefix, page_size):
            for write in writes:
                if write.started >= cutoff:
                    continue
                fields = {"key": write.key, "write": write.handle, "age_s": round(started - write.started, 1),
                          "storage": storage.name}
                if not dry_run:
                    try:
                        await storage.discard_unfinished_write(write)
                    except StorageError as exc:
                        report.failed += 1
                        SWEEP_FAILED.labels("unfinished_write").inc()
                        log.warning("interrupted write not discarded", extra=fields | {"error": str(exc)})
                        continue
                    SWEEP_DELETED.labels("unfinished_write").inc()
                report.unfinished_writes += 1
                log.info("interrupted write would be discarded" if dry_run else "interrupted write discarded",
                         extra=fields)
    log.info("orphan sweep finished", extra=report.summary() | {"seconds": round(time.monotonic() - timer, 2)})
    return report


async def sweep_exclusively(
    pool: asyncpg.Pool,
    storage: Storage,
    *,
    grace_s: float,
    dry_run: bool = False,
    on_orphan: Callable[[str, int, float], object] | None = None,
) -> SweepReport | None:
    """`sweep`, unless another process is sweeping the same database now (then None): many
    media processes share one storage, and one listing of it at a time is enough."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1::int, 0)", SWEEP_LOCK_CLASS):
            return None
        try:
            return await sweep(pool, storage, grace_s=grace_s, dry_run=dry_run, on_orphan=on_orphan)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1::int, 0)", SWEEP_LOCK_CLASS)


def sweep_temp_files(tmp_dir: Path, *, grace_s: float, now: float | None = None) -> int:
    """Delete this process's leftover temporary files (`plyr-*` in `tmp_dir`, see
    media.receive.temp_path) older than `grace_s`; returns how many. Files in use are younger:
    an upload or transcode in progress writes to its file all along."""
    cutoff = (time.time() if now is None else now) - grace_s
    removed = 0
    try:
        entries = list(os.scandir(tmp_dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if (
                entry.name.startswith("plyr-")
                and entry.is_file(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_mtime < cutoff
            ):
                os.unlink(entry.path)
                removed += 1
                SWEEP_DELETED.labels("temp_file").inc()
                log.info("leftover temporary file deleted", extra={"path": entry.path})
        except FileNotFoundError:
            continue  # removed meanwhile by its owner
    return removed
