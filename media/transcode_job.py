"""The `transcode` and `verify` jobs on a stored audio master.

transcode - payload {sha256, title?, artist?, cover_sha256?}: the master (and the cover, if any)
is read from storage into temporary files (the local backend's files are used in place),
ffmpeg writes the MP3 rendition to a temporary file, and only a complete rendition is stored.
verify - payload {sha256}: uploads that stream as they are (MP3, AAC, Opus) are decoded once
in full; one that decodes to much less than its header declares (truncated) fails the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from media.errors import ResourceExhausted, exhausted_errno, subprocess_exhaustion
from media.ffmpeg import FFmpegError
from media.ingest import MediaContext, stream_key
from media.job_context import JobContext, JobFailed
from media.receive import temp_path
from media.storage import LocalStorage
from media.sweep import delete_if_unreferenced, keep_stored
from media.transcode import decode_check, transcode_to_mp3

log = logging.getLogger("plyr.media.transcode")


def _ffmpeg_failure(exc: FFmpegError, output_dir: Path | None) -> Exception:
    """What a failed ffmpeg run means for the job: the machine's problem (a full disk, the OOM
    killer: retried later) or the input's (the same input fails the same way: fail now).

    Decided from facts ffmpeg cannot be talked into (the errno of our own failed start, its exit
    status, the free space of the folder it wrote to), never from the text it printed."""
    err = exhausted_errno(exc)
    if err is None:
        err = subprocess_exhaustion(exc.returncode, output_dir)
    if err is not None:
        return ResourceExhausted(err)
    return JobFailed(str(exc))


@contextlib.asynccontextmanager
async def local_copy(media: MediaContext, key: str, suffix: str = "") -> AsyncIterator[Path]:
    """A local file holding the object `key`: the object itself (local backend) or a temp copy."""
    if isinstance(media.storage, LocalStorage):
        yield media.storage.path(key)
        return
    async with temp_path(media.settings.tmp_dir, suffix or ".obj") as tmp:
        with open(tmp, "wb") as out:  # noqa: ASYNC230 - 1 MB writes between awaits
            async for chunk in media.storage.open_range(key):
                out.write(chunk)
        yield tmp


async def make_stream(
    ctx: JobContext,
    sha256: str,
    *,
    title: str | None,
    artist: str | None,
    cover_sha256: str | None,
    span: tuple[float, float] = (0.0, 1.0),
) -> dict[str, Any]:
    """Transcode the master `sha256` to its stream rendition (if not made yet); return its row."""
    media = ctx.media
    async with media.pool.acquire() as conn:
        done = await conn.fetchrow(
            "SELECT url, size FROM media_renditions WHERE source_sha256 = $1 AND name = 'stream'", sha256
        )
        if done is not None:
            return {"streamUrl": done["url"], "size": done["size"], "reused": True}
        master = await conn.fetchrow(
            "SELECT storage_key, format, probe FROM media_objects WHERE sha256 = $1 AND kind = 'audio'", sha256
        )
        cover = None
        if cover_sha256:
            cover = await conn.fetchrow(
                """SELECT r.storage_key FROM media_renditions r
                   WHERE r.source_sha256 = $1 AND r.name = 'display'""",
                cover_sha256,
            )
    if master is None:
        raise JobFailed(f"no stored audio {sha256}")
    duration = master["probe"].get("duration_s")
    lo, hi = span

    async def on_progress(fraction: float) -> None:
        await ctx.progress(lo + (hi - lo) * fraction)

    await ctx.progress(lo, "transcoding")
    key = stream_key(sha256)
    async with contextlib.AsyncExitStack() as stack:
        source = await stack.enter_async_context(local_copy(media, master["storage_key"]))
        cover_path = None
        if cover is not None:
            cover_path = await stack.enter_async_context(local_copy(media, cover["storage_key"], ".webp"))
        out = await stack.enter_async_context(temp_path(media.settings.tmp_dir, ".mp3"))
        try:
            await transcode_to_mp3(
                media.ffmpeg,
                source,
                out,
                duration_s=duration,
                timeout_s=media.settings.transcode_timeout_s,
                title=title,
                artist=artist,
                cover=cover_path,
                on_progress=on_progress,
                source_format=master["format"],
            )
        except FFmpegError as exc:
            raise _ffmpeg_failure(exc, out.parent) from exc
        size = out.stat().st_size
        await ctx.progress(hi, "storing")
        await media.storage.put_file(key, out, "audio/mpeg")
        url = media.storage.url(key)
        try:
            async with media.pool.acquire() as conn, conn.transaction():
                # The key may have been an orphan's that the sweep is deleting: see media/sweep.py.
                await keep_stored(conn, media.storage, [(key, out, "audio/mpeg")])
                await conn.execute(
                    """INSERT INTO media_renditions (source_sha256, name, storage_key, mime_type, size, url)
                       VALUES ($1, 'stream', $2, 'audio/mpeg', $3, $4)
                       ON CONFLICT (source_sha256, name) DO NOTHING""",
                    sha256, key, size, url,
                )
        except BaseException:
            # Not when a row refers to it: another job may have recorded the same rendition.
            with contextlib.suppress(Exception):
                await asyncio.shield(delete_if_unreferenced(media.pool, media.storage, key))
            raise
    return {"streamUrl": url, "size": size, "reused": False}


async def run_transcode(ctx: JobContext) -> dict[str, Any]:
    payload = ctx.job.payload
    result = await make_stream(
        ctx,
        payload["sha256"],
        title=payload.get("title"),
        artist=payload.get("artist"),
        cover_sha256=payload.get("cover_sha256"),
    )
    return {"sha256": payload["sha256"], **result}


async def run_verify(ctx: JobContext) -> dict[str, Any]:
    media = ctx.media
    sha = ctx.job.payload["sha256"]
    async with media.pool.acquire() as conn:
        master = await conn.fetchrow(
            "SELECT storage_key, format, probe FROM media_objects WHERE sha256 = $1 AND kind = 'audio'", sha
        )
    if master is None:
        raise JobFailed(f"no stored audio {sha}")
    duration = master["probe"].get("duration_s")
    await ctx.progress(0.0, "decoding")
    async with local_copy(media, master["storage_key"]) as source:
        try:
            decoded = await decode_check(
                media.ffmpeg,
                source,
                fmt=master["format"],
                duration_s=duration,
                timeout_s=media.settings.transcode_timeout_s,
                on_progress=lambda f: ctx.progress(f),
            )
        except FFmpegError as exc:
            raise _ffmpeg_failure(exc, None) from exc
    async with media.pool.acquire() as conn:
        await conn.execute(
            "UPDATE media_objects SET probe = probe || $2 WHERE sha256 = $1",
            sha, {"verified": True, "decoded_s": decoded},
        )
    return {"sha256": sha, "verified": True, "decodedS": decoded}
