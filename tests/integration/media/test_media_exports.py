"""Exports: an artist's tracks as one zip, built by a job, downloaded with a dated name."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

from integration.media.conftest import OWNER, MediaServer, leftover_temp_files
from media.exports import expire_exports, export_filename


async def _track(pool: asyncpg.Pool, did: str, rkey: str, title: str, audio_url: str | None) -> None:
    now = datetime.now(UTC)
    await pool.execute(
        """INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, file_type, audio_url,
                               record, created_at, sort_at)
           VALUES ($1, $2, $3, 'bafyreicid', '3k2a', $4, 'Artist/With:Slashes', 'mp3', $5, '{}'::jsonb, $6, $6)""",
        f"at://{did}/fm.plyr.track/{rkey}", did, rkey, title, audio_url, now,
    )


async def test_export_zip_of_an_artists_tracks(media_server: MediaServer, pool: asyncpg.Pool, samples: dict[str, Path]) -> None:
    _, mp3 = await media_server.upload("audio", samples["tone.mp3"].read_bytes())
    _, flac = await media_server.upload("audio", samples["tone.flac"].read_bytes())
    await media_server.run_jobs()  # the flac's stream rendition
    await _track(pool, OWNER, "3k001", "First", mp3["url"])
    await _track(pool, OWNER, "3k002", "Second: the lossless one", flac["streamUrl"])  # plays the MP3...
    await _track(pool, OWNER, "3k003", "Elsewhere", "https://cdn.example/other.mp3")
    await _track(pool, "did:plc:someoneelse00000000000", "3k004", "Not mine", mp3["url"])

    h = media_server.headers
    async with media_server.session.post(f"{media_server.url}/exports", headers=h) as resp:
        assert resp.status == 202
        job_id = (await resp.json())["jobId"]
    async with media_server.session.get(f"{media_server.url}/exports/{job_id}/download", headers=h) as resp:
        assert resp.status == 409  # not built yet
    assert await media_server.run_jobs() == 1
    job = await media_server.job(job_id)
    assert job.status == "done", job.error
    assert job.result and (job.result["tracks"], job.result["skipped"]) == (2, 1)

    other = {**h, "X-Plyr-Did": "did:plc:someoneelse00000000000"}
    async with media_server.session.get(f"{media_server.url}/exports/{job_id}/download", headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401
    async with media_server.session.get(f"{media_server.url}/exports/{job_id}/download", headers=other) as resp:
        assert resp.status == 200  # the server key is trusted for any account
    async with media_server.session.get(f"{media_server.url}/exports/{job_id}/download", headers=h) as resp:
        assert resp.status == 200
        day = datetime.now(UTC).date().isoformat()
        assert resp.headers["Content-Disposition"] == f'attachment; filename="{export_filename(OWNER, datetime.now(UTC).date())}"'
        assert day in resp.headers["Content-Disposition"]
        data = await resp.read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert names[-1] == "tracks.json"
        files = sorted(n for n in names if n.startswith("tracks/"))
        assert files[0].startswith("tracks/001 - Artist With Slashes - First") and files[0].endswith(".mp3")
        assert files[1].endswith(".flac")  # the master, not the MP3 it plays from
        assert zf.read(files[0]) == samples["tone.mp3"].read_bytes()
        assert zf.read(files[1]) == samples["tone.flac"].read_bytes()
        manifest = orjson.loads(zf.read("tracks.json"))
        assert manifest["did"] == OWNER and len(manifest["tracks"]) == 3
        assert manifest["tracks"][2]["file"] is None
    # the zip is not reachable as a public media object
    key = job.result["key"]
    async with media_server.session.get(f"{media_server.url}/media/{key}") as resp:
        assert resp.status == 404
    assert leftover_temp_files(media_server.settings) == []

    # expiry: a fresh export stays; an old one loses its zip and answers 410
    assert await expire_exports(pool, media_server.ctx.storage, ttl_s=3600) == 0
    await pool.execute("UPDATE media_jobs SET finished_at = now() - interval '2 hours' WHERE id = $1", job_id)
    assert await expire_exports(pool, media_server.ctx.storage, ttl_s=3600) == 1
    assert not await media_server.ctx.storage.exists(key)
    async with media_server.session.get(f"{media_server.url}/exports/{job_id}/download", headers=h) as resp:
        assert resp.status == 410
    assert await expire_exports(pool, media_server.ctx.storage, ttl_s=3600) == 0


async def test_export_with_nothing_to_export_fails_clearly(media_server: MediaServer, pool: asyncpg.Pool) -> None:
    async with media_server.session.post(f"{media_server.url}/exports", headers=media_server.headers) as resp:
        job_id = (await resp.json())["jobId"]
    await media_server.run_jobs()
    job = await media_server.job(job_id)
    assert job.status == "failed" and "no tracks" in (job.error or "")
    await _track(pool, OWNER, "3k009", "Remote only", "https://elsewhere.example/a.mp3")
    async with media_server.session.post(f"{media_server.url}/exports", headers=media_server.headers) as resp:
        job_id = (await resp.json())["jobId"]
    await media_server.run_jobs()
    job = await media_server.job(job_id)
    assert job.status == "failed" and "none of the 1 tracks" in (job.error or "")
