"""The `export` job: all of an artist's tracks in one zip, built in constant memory.

For each track of the DID (in publication order) the job finds the master we hold - by the URL
the track plays from, or by its mirrored blob - and streams it into a zip (stored, not
recompressed: audio is compressed already) written to a temporary file, together with a
`tracks.json` listing every track and what was left out. The finished zip is stored under an
unguessable key and downloaded through `/exports/{job}/download` as
`plyr-export-<did>-<YYYY-MM-DD>.zip`. Memory is one read buffer, whatever the total size.
Finished zips are removed after PLYR_MEDIA_EXPORT_TTL_S (`expire_exports`, run by the service);
their download then answers 410. Asking again while nothing changed (same tracks, titles and
stored masters: `content_state`) returns the finished export instead of storing another zip.
Entry names keep no control or format characters (bidi overrides, zero-width marks), which
could make "song\u202egpj.exe" display as something it is not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import secrets
import threading
import unicodedata
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import zipstream

from core.db import Connection
from media.job_context import JobContext, JobFailed
from media.receive import temp_path
from media.storage import LocalStorage, Storage

READ_BYTES = 1024 * 1024

_TRACKS = """
SELECT t.uri, t.title, t.artist, t.album, t.created_at, t.audio_url,
       o.sha256, o.storage_key, o.size, o.format
FROM tracks t
LEFT JOIN LATERAL (
    SELECT o.* FROM media_objects o
    WHERE o.kind = 'audio'
      AND (o.url = t.audio_url
           OR (t.audio_blob_cid IS NOT NULL AND o.blob_cid = t.audio_blob_cid)
           OR o.sha256 IN (SELECT r.source_sha256 FROM media_renditions r WHERE r.url = t.audio_url))
    LIMIT 1
) o ON true
WHERE t.did = $1
ORDER BY t.created_at, t.uri
"""


# Unicode categories dropped from entry names: controls (Cc: C0, DEL, C1), format characters
# (Cf: bidi embeddings/overrides/isolates U+202A-202E, U+2066-2069, LRM/RLM, zero-width
# joiners...), line and paragraph separators, and unassigned/private/surrogate code points.
_DROPPED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cn", "Co", "Cs"})


def _safe_name(text: str, limit: int = 80) -> str:
    visible = "".join(ch for ch in (text or "") if unicodedata.category(ch) not in _DROPPED)
    cleaned = re.sub(r'[/\\:*?"<>|]+', " ", visible).strip(" .")
    return re.sub(r"\s+", " ", cleaned)[:limit].strip(" .") or "untitled"


def _state_of(rows: list[asyncpg.Record]) -> str:
    """A digest of everything an export of these rows contains: equal digests, equal zips."""
    parts = [
        [r["uri"], r["title"], r["artist"], r["album"], r["created_at"].isoformat(), r["sha256"], r["storage_key"]]
        for r in rows
    ]
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()


async def content_state(conn: Connection, did: str) -> str | None:
    """The digest of what an export of `did` would hold now (None: no tracks)."""
    rows = await conn.fetch(_TRACKS, did)
    return _state_of(rows) if rows else None


async def reusable_export(conn: Connection, did: str, state: str, *, ttl_s: float) -> int | None:
    """A finished export of `did` with this exact content and at least half its life left."""
    return await conn.fetchval(
        """SELECT id FROM media_jobs
           WHERE kind = 'export' AND owner = $1 AND status = 'done'
             AND result->>'state' = $2
             AND NOT coalesce((result->>'expired')::boolean, false)
             AND finished_at > now() - make_interval(secs => $3)
           ORDER BY id DESC LIMIT 1""",
        did,
        state,
        ttl_s / 2,
    )


def export_filename(did: str, day: dt.date) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", did.lower()).strip("-")[:80]
    return f"plyr-export-{slug}-{day.isoformat()}.zip"


class _Bridge:
    """Lets the zip-writing thread pull an object's bytes from the async storage backend."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        self.loop = loop
        self.stop = stop

    def read_object(self, agen: AsyncGenerator[bytes, None]) -> Iterator[bytes]:
        try:
            while not self.stop.is_set():
                try:
                    chunk = asyncio.run_coroutine_threadsafe(agen.__anext__(), self.loop).result()
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            asyncio.run_coroutine_threadsafe(agen.aclose(), self.loop).result()


def _read_file(path: Path, stop: threading.Event) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while not stop.is_set() and (chunk := handle.read(READ_BYTES)):
            yield chunk


def _write_zip(zs: zipstream.ZipStream, out: Path, counter: list[int], stop: threading.Event) -> None:
    with open(out, "wb") as handle:
        for chunk in zs:
            if stop.is_set():
                raise RuntimeError("export cancelled")
            handle.write(chunk)
            counter[0] += len(chunk)


async def run_export(ctx: JobContext) -> dict[str, Any]:
    media = ctx.media
    did = ctx.job.payload["did"]
    async with media.pool.acquire() as conn:
        rows = await conn.fetch(_TRACKS, did)
    if not rows:
        raise JobFailed(f"{did} has no tracks to export")
    await ctx.progress(0.0, "collecting tracks")

    loop = asyncio.get_running_loop()
    stop = threading.Event()
    bridge = _Bridge(loop, stop)
    zs = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED)
    manifest: list[dict[str, Any]] = []
    used: set[str] = set()
    total = 0
    for n, row in enumerate(rows, start=1):
        entry: dict[str, Any] = {"uri": row["uri"], "title": row["title"], "artist": row["artist"],
                                 "album": row["album"], "createdAt": row["created_at"].isoformat()}
        if row["storage_key"] is None:
            entry["file"] = None
            entry["note"] = "audio not held by this service"
            manifest.append(entry)
            continue
        ext = row["storage_key"].rsplit(".", 1)[-1]
        name = f"{n:03d} - {_safe_name(row['artist'], 40)} - {_safe_name(row['title'])}.{ext}"
        while name in used:
            name = f"{n:03d}-{secrets.token_hex(2)} {name[4:]}"
        used.add(name)
        entry["file"] = name
        entry["sha256"] = row["sha256"]
        manifest.append(entry)
        total += int(row["size"])
        if isinstance(media.storage, LocalStorage):
            data: Iterator[bytes] = _read_file(media.storage.path(row["storage_key"]), stop)
        else:
            data = bridge.read_object(media.storage.open_range(row["storage_key"]))
        zs.add(data, f"tracks/{name}")
    if total == 0:
        raise JobFailed(f"none of the {len(rows)} tracks of {did} has audio stored here")
    zs.add(orjson.dumps({"did": did, "tracks": manifest}, option=orjson.OPT_INDENT_2), "tracks.json")

    day = dt.datetime.now(dt.UTC).date()
    filename = export_filename(did, day)
    key = f"exports/{ctx.job.id}-{secrets.token_hex(16)}/{filename}"
    async with temp_path(media.settings.tmp_dir, ".zip") as out:
        counter = [0]
        writer = asyncio.create_task(asyncio.to_thread(_write_zip, zs, out, counter, stop))
        try:
            while not writer.done():
                await asyncio.wait({writer}, timeout=0.5)
                await ctx.progress(min(0.95, 0.95 * counter[0] / total), "zipping")
            await writer
        except BaseException:
            stop.set()  # the thread stops at its next chunk; then the temp file goes
            await asyncio.gather(writer, return_exceptions=True)
            raise
        size = out.stat().st_size
        await ctx.progress(0.96, "storing")
        await media.storage.put_file(key, out, "application/zip")
    return {
        "key": key,
        "state": _state_of(rows),
        "filename": filename,
        "size": size,
        "tracks": sum(1 for e in manifest if e.get("file")),
        "skipped": sum(1 for e in manifest if not e.get("file")),
        "download": f"/exports/{ctx.job.id}/download",
    }


async def expire_exports(pool: asyncpg.Pool, storage: Storage, *, ttl_s: float) -> int:
    """Delete the zips of exports finished more than `ttl_s` ago; return how many."""
    rows = await pool.fetch(
        """SELECT id, result->>'key' AS key FROM media_jobs
           WHERE kind = 'export' AND status = 'done' AND result ? 'key'
             AND NOT coalesce((result->>'expired')::boolean, false)
             AND finished_at < now() - make_interval(secs => $1)
           ORDER BY id LIMIT 1000""",
        ttl_s,
    )
    for row in rows:
        await storage.delete(row["key"])
        await pool.execute(
            """UPDATE media_jobs SET result = result || '{"expired": true}'::jsonb, updated_at = now()
               WHERE id = $1""",
            row["id"],
        )
    return len(rows)
