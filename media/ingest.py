"""From a received file to a stored media object: check the bytes, probe, store once, plan renditions.

Used by uploads (media/http.py) and by PDS blob mirroring (media/mirror.py). The content's
sha-256 names the object, so the same file arriving twice is stored once. If anything fails
after an object was written, the object is removed again: storage never keeps a file the
database does not know about.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from core.db import Connection
from media import jobs
from media.copyright.store import request_scan
from media.images import ImageError, process_image
from media.probe import ProbeError, probe_file
from media.receive import Received, temp_path
from media.settings import MediaSettings
from media.sniff import Sniffed, SniffError, check_declared_size, sniff
from media.storage import Storage
from media.sweep import delete_if_unreferenced, keep_stored
from media.transcode import is_lossless, needs_transcode

log = logging.getLogger("plyr.media.ingest")


class BadMedia(ValueError):
    """The file cannot be accepted; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class MediaContext:
    settings: MediaSettings
    pool: asyncpg.Pool
    storage: Storage
    ffmpeg: str


def audio_key(sha256: str, ext: str) -> str:
    return f"audio/{sha256[:2]}/{sha256}.{ext}"


def stream_key(sha256: str) -> str:
    return f"audio/{sha256[:2]}/{sha256}.320.mp3"


def image_key(sha256: str, name: str) -> str:
    return f"images/{sha256[:2]}/{sha256}.{name}"


def identify(received: Received, kind: str) -> Sniffed:
    """Sniff the received bytes; raise BadMedia unless they are a supported file of `kind`."""
    if received.size == 0:
        raise BadMedia(400, "the upload is empty (0 bytes)")
    try:
        sniffed = sniff(received.head)
        check_declared_size(sniffed, received.head, received.size)
    except SniffError as exc:
        status = 422 if "truncated" in str(exc) else 415
        raise BadMedia(status, str(exc)) from None
    if sniffed.kind != kind:
        raise BadMedia(415, f"expected an {kind} file, got {sniffed.format} ({sniffed.kind})")
    return sniffed


async def _store_new(ctx: MediaContext, key: str, path: Path, mime: str) -> bool:
    """Store `path` under `key` unless it is there already; True when this call wrote it."""
    if await ctx.storage.exists(key):
        return False
    await ctx.storage.put_file(key, path, mime)
    return True


async def _undo(ctx: MediaContext, keys: list[str]) -> None:
    # Only when no row refers to it: a concurrent upload of the same bytes may have recorded the
    # object we stored. What cannot be removed now (database down) is left to the orphan sweep.
    for key in keys:
        try:
            await asyncio.shield(delete_if_unreferenced(ctx.pool, ctx.storage, key))
        except Exception:
            log.exception("could not remove an object after a failure", extra={"key": key})


async def ingest_audio(
    ctx: MediaContext,
    received: Received,
    *,
    owner: str | None,
    title: str | None = None,
    artist: str | None = None,
    cover_sha256: str | None = None,
    blob_cid: str | None = None,
    queue_transcode: bool = True,
) -> dict[str, Any]:
    sniffed = identify(received, "audio")
    try:
        probe = await probe_file(received.path, fmt=sniffed.format)
    except ProbeError as exc:
        raise BadMedia(422, f"the {sniffed.format} file cannot be read: {exc}") from None
    if probe.codec is None:
        raise BadMedia(422, f"the {sniffed.format} file holds no audio stream")
    if not probe.duration_s or probe.duration_s <= 0:
        raise BadMedia(422, f"the {sniffed.format} file has no duration (empty or truncated)")
    if sniffed.format == "mp3" and probe.codec != "mp3":
        raise BadMedia(415, f"the file looks like MP3 but holds {probe.codec}")

    sha = received.sha256
    key = audio_key(sha, sniffed.ext)
    written: list[str] = []
    try:
        if await _store_new(ctx, key, received.path, sniffed.mime_type):
            written.append(key)
        url = ctx.storage.url(key)
        probe_json = probe.to_json() | {"lossless": is_lossless(sniffed.format, probe.codec)}
        transcode = needs_transcode(sniffed.format, probe.codec)
        async with ctx.pool.acquire() as conn, conn.transaction():
            written += await keep_stored(conn, ctx.storage, [(key, received.path, sniffed.mime_type)])
            row = await conn.fetchrow(
                """INSERT INTO media_objects
                       (sha256, kind, format, mime_type, size, storage_key, url, uploaded_by, blob_cid, probe)
                   VALUES ($1, 'audio', $2, $3, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT (sha256) DO UPDATE
                       SET blob_cid = coalesce(media_objects.blob_cid, EXCLUDED.blob_cid)
                   RETURNING url, (xmax = 0) AS inserted""",
                sha, sniffed.format, sniffed.mime_type, received.size, key, url, owner, blob_cid, probe_json,
            )
            assert row is not None  # an upsert with RETURNING: always one row
            url = row["url"]
            if ctx.settings.copyright_scan:
                # Every audio we hold is scanned once (media/copyright/), uploads and blob copies.
                await request_scan(conn, sha, owner=owner)
            job_id = None
            stream_ready = True
            if transcode:
                stream = await conn.fetchrow(
                    "SELECT url FROM media_renditions WHERE source_sha256 = $1 AND name = 'stream'", sha
                )
                if stream is not None:
                    stream_url = stream["url"]
                else:
                    stream_url = ctx.storage.url(stream_key(sha))
                    stream_ready = False
                    if queue_transcode:
                        job_id = await jobs.enqueue(
                            conn,
                            kind="transcode",
                            owner=owner,
                            payload={"sha256": sha, "title": title, "artist": artist, "cover_sha256": cover_sha256},
                            max_attempts=ctx.settings.job_max_attempts,
                            dedupe_key=sha,
                        )
            else:
                stream_url = url
                verified = bool(await conn.fetchval(
                    "SELECT (probe ->> 'verified')::boolean FROM media_objects WHERE sha256 = $1", sha
                ))
                if queue_transcode and not verified:
                    # Streams as uploaded: decode it once in full to catch truncation.
                    job_id = await jobs.enqueue(
                        conn, kind="verify", owner=owner, payload={"sha256": sha},
                        max_attempts=ctx.settings.job_max_attempts, dedupe_key=sha,
                    )
            if job_id is not None and owner is not None:
                # The job may be another uploader's (one live job per sha-256): let this one read it.
                await jobs.add_reader(conn, job_id, owner)
    except BaseException:
        await _undo(ctx, written)
        raise
    return {
        "sha256": sha,
        "kind": "audio",
        "format": sniffed.format,
        "mimeType": sniffed.mime_type,
        "size": received.size,
        "durationS": probe.duration_s,
        "codec": probe.codec,
        "sampleRate": probe.sample_rate,
        "channels": probe.channels,
        "lossless": probe_json["lossless"],
        "tags": probe.tags,
        "url": url,
        "streamUrl": stream_url,
        "streamReady": stream_ready,
        "jobId": job_id,
        "created": bool(row["inserted"]),
    }


async def ingest_image(ctx: MediaContext, received: Received, *, owner: str | None) -> dict[str, Any]:
    sniffed = identify(received, "image")
    sha = received.sha256
    async with ctx.pool.acquire() as conn:
        known = await conn.fetchrow("SELECT url FROM media_objects WHERE sha256 = $1", sha)
        if known is not None:
            return await _image_result(conn, sha, known["url"], created=False)
    try:
        rend = await asyncio.to_thread(process_image, received.path)
    except ImageError as exc:
        raise BadMedia(422, str(exc)) from None
    key = image_key(sha, sniffed.ext)
    thumb_key = image_key(sha, "96.webp")
    display_key = image_key(sha, "display.webp")
    written: list[str] = []
    try:
        if await _store_new(ctx, key, received.path, sniffed.mime_type):
            written.append(key)
        renditions = [("thumb", thumb_key, rend.thumb), ("display", display_key, rend.display)]
        # The rendition files stay until the rows are in: keep_stored may need to store them again.
        async with contextlib.AsyncExitStack() as stack:
            objects = [(key, received.path, sniffed.mime_type)]
            for _, rkey, data in renditions:
                tmp = await stack.enter_async_context(temp_path(ctx.settings.tmp_dir, ".webp"))
                await asyncio.to_thread(tmp.write_bytes, data)
                if await _store_new(ctx, rkey, tmp, "image/webp"):
                    written.append(rkey)
                objects.append((rkey, tmp, "image/webp"))
            probe = {"width": rend.width, "height": rend.height}
            async with ctx.pool.acquire() as conn, conn.transaction():
                written += await keep_stored(conn, ctx.storage, objects)
                result = await _insert_image_rows(conn, ctx, received, sniffed, key, probe, owner, renditions)
    except BaseException:
        with contextlib.suppress(Exception):
            await _undo(ctx, written)
        raise
    return result


async def _insert_image_rows(
    conn: Connection,
    ctx: MediaContext,
    received: Received,
    sniffed: Sniffed,
    key: str,
    probe: dict[str, Any],
    owner: str | None,
    renditions: list[tuple[str, str, bytes]],
) -> dict[str, Any]:
    sha = received.sha256
    await conn.execute(
        """INSERT INTO media_objects
               (sha256, kind, format, mime_type, size, storage_key, url, uploaded_by, probe)
           VALUES ($1, 'image', $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (sha256) DO NOTHING""",
        sha, sniffed.format, sniffed.mime_type, received.size, key, ctx.storage.url(key), owner, probe,
    )
    for name, rkey, data in renditions:
        await conn.execute(
            """INSERT INTO media_renditions (source_sha256, name, storage_key, mime_type, size, url)
               VALUES ($1, $2, $3, 'image/webp', $4, $5)
               ON CONFLICT (source_sha256, name) DO NOTHING""",
            sha, name, rkey, len(data), ctx.storage.url(rkey),
        )
    url = await conn.fetchval("SELECT url FROM media_objects WHERE sha256 = $1", sha)
    return await _image_result(conn, sha, url, created=True)


async def _image_result(conn: Connection, sha: str, url: str, *, created: bool) -> dict[str, Any]:
    obj = await conn.fetchrow("SELECT format, mime_type, size, probe FROM media_objects WHERE sha256 = $1", sha)
    assert obj is not None  # the caller has just found or stored it
    rends = {
        r["name"]: r["url"]
        for r in await conn.fetch("SELECT name, url FROM media_renditions WHERE source_sha256 = $1", sha)
    }
    return {
        "sha256": sha,
        "kind": "image",
        "format": obj["format"],
        "mimeType": obj["mime_type"],
        "size": obj["size"],
        "width": obj["probe"].get("width"),
        "height": obj["probe"].get("height"),
        "url": url,
        "thumbUrl": rends.get("thumb"),
        "displayUrl": rends.get("display"),
        "created": created,
    }
