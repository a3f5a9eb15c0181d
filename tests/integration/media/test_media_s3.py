"""S3Storage against a real S3-protocol server on loopback (moto's ThreadedMotoServer)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from integration.media.conftest import (
    BUCKET,
    MediaServer,
    leftover_temp_files,
    make_s3,
    media_settings,
    start_media_server,
)
from media.ingest import stream_key
from media.storage import S3Storage, StorageError

MB = 1024 * 1024


@pytest.fixture
async def s3(moto_url: str) -> AsyncIterator[S3Storage]:
    storage = make_s3(moto_url)
    client = await storage.client()
    try:
        await client.create_bucket(Bucket=BUCKET)
    except Exception as exc:  # already made by an earlier test in this module
        if "BucketAlready" not in str(exc):
            raise
    yield storage
    await storage.close()


def _file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def _read(storage: S3Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in storage.open_range(key, start, end)])


async def test_put_small_and_multipart_then_read_ranges(s3: S3Storage, tmp_path: Path) -> None:
    small = _file(tmp_path / "small", 1000)
    big = _file(tmp_path / "big", 12 * MB + 123)  # three parts of 5 MB
    await s3.put_file("t/small.bin", tmp_path / "small", "application/octet-stream")
    await s3.put_file("t/big.bin", tmp_path / "big", "audio/wav")
    assert await _read(s3, "t/small.bin") == small
    assert await _read(s3, "t/big.bin") == big
    assert await _read(s3, "t/big.bin", 5 * MB - 10, 5 * MB + 9) == big[5 * MB - 10 : 5 * MB + 10]
    info = await s3.stat("t/big.bin")
    assert info is not None and info.size == len(big) and info.content_type == "audio/wav"
    assert info.etag.endswith('-3"')  # a multipart ETag: three parts
    assert await s3.exists("t/small.bin") and not await s3.exists("t/nothing")
    await s3.delete("t/small.bin")
    await s3.delete("t/small.bin")  # deleting twice is fine
    assert not await s3.exists("t/small.bin")


async def test_urls_public_and_presigned(s3: S3Storage, moto_url: str, tmp_path: Path) -> None:
    data = _file(tmp_path / "f", 2000)
    await s3.put_file("t/f.mp3", tmp_path / "f", "audio/mpeg")
    assert s3.url("t/f.mp3") == "http://media.test/media/t/f.mp3"
    public = make_s3(moto_url, public_url="https://cdn.example/")
    assert public.url("t/f.mp3") == "https://cdn.example/t/f.mp3"
    signed = await s3.download_url("t/f.mp3", "song.mp3")
    assert signed is not None and "Signature" in signed
    async with aiohttp.ClientSession() as session, session.get(signed) as resp:
        assert resp.status == 200 and await resp.read() == data
        assert 'filename="song.mp3"' in resp.headers.get("Content-Disposition", "")


async def test_failed_multipart_upload_is_aborted_and_leaves_nothing(s3: S3Storage, tmp_path: Path) -> None:
    _file(tmp_path / "big", 11 * MB)
    client = await s3.client()
    real_upload_part = client.upload_part
    calls = 0

    async def failing_upload_part(**kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("connection reset in the middle of the upload")
        return await real_upload_part(**kw)

    client.upload_part = failing_upload_part
    try:
        with pytest.raises(StorageError, match="connection reset"):
            await s3.put_file("t/broken.bin", tmp_path / "big", "audio/wav")
    finally:
        client.upload_part = real_upload_part
    assert not await s3.exists("t/broken.bin")
    pending = await client.list_multipart_uploads(Bucket=BUCKET)
    assert not pending.get("Uploads"), pending["Uploads"]


async def test_missing_bucket_is_a_storage_error(moto_url: str, tmp_path: Path) -> None:
    storage = make_s3(moto_url, bucket="no-such-bucket")
    _file(tmp_path / "f", 100)
    try:
        with pytest.raises(StorageError, match="no-such-bucket|NoSuchBucket"):
            await storage.put_file("t/f", tmp_path / "f", "audio/mpeg")
        with pytest.raises(StorageError):
            await storage.put_file("bad key/..", tmp_path / "f", "audio/mpeg")
    finally:
        await storage.close()


async def test_upload_transcode_and_serve_through_s3(
    s3: S3Storage, moto_url: str, pool: asyncpg.Pool, database_url: str, tmp_path: Path, samples: dict[str, Path]
) -> None:
    settings = media_settings(tmp_path / "data", storage="s3", s3_bucket=BUCKET)
    runner, server, events = await start_media_server(
        pool, database_url, settings, storage_factory=lambda st: make_s3(moto_url, media_url=st.public_url)
    )
    try:
        media: MediaServer = server
        data = samples["tone.flac"].read_bytes()
        status, body = await media.upload("audio", data, {"title": "T", "artist": "A"})
        assert status == 201, body
        assert body["url"].startswith(media.url + "/media/audio/")
        assert await media.run_jobs() == 1
        job = await media.job(body["jobId"])
        assert job.status == "done", job.error
        assert await s3.exists(stream_key(body["sha256"]))
        # the stable URL redirects to a fresh presigned URL of the bucket
        async with media.session.get(body["url"], allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"].startswith(moto_url)
        async with media.session.get(body["url"]) as resp:
            assert await resp.read() == data
        async with media.session.get(body["streamUrl"]) as resp:
            assert resp.status == 200 and (await resp.read())[:3] == b"ID3"
        assert leftover_temp_files(media.settings) == []
        assert not (media.settings.data_dir / "media").exists()  # nothing written locally
    finally:
        await server.session.close()
        await runner.cleanup()
        await events.stop()
        await server.ctx.storage.close()


async def test_export_reads_masters_from_s3(
    s3: S3Storage, moto_url: str, pool: asyncpg.Pool, database_url: str, tmp_path: Path, samples: dict[str, Path]
) -> None:
    import io
    import zipfile
    from datetime import UTC, datetime

    from integration.media.conftest import OWNER

    settings = media_settings(tmp_path / "data", storage="s3", s3_bucket=BUCKET)
    runner, server, events = await start_media_server(
        pool, database_url, settings, storage_factory=lambda st: make_s3(moto_url, media_url=st.public_url)
    )
    try:
        uploads = {}
        for n, name in enumerate(("tone.mp3", "tone.opus")):
            _, body = await server.upload("audio", samples[name].read_bytes())
            uploads[name] = body
            now = datetime.now(UTC)
            await pool.execute(
                """INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, file_type, audio_url,
                                       record, created_at, sort_at)
                   VALUES ($1, $2, $3, 'c', 'r', $4, 'A', 'mp3', $5, '{}'::jsonb, $6, $6)""",
                f"at://{OWNER}/fm.plyr.track/{n}", OWNER, str(n), name, body["url"], now,
            )
        async with server.session.post(f"{server.url}/exports", headers=server.headers) as resp:
            job_id = (await resp.json())["jobId"]
        await server.run_jobs()
        job = await server.job(job_id)
        assert job.status == "done", job.error
        async with server.session.get(f"{server.url}/exports/{job_id}/download", headers=server.headers, allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"].startswith(moto_url)
        async with server.session.get(f"{server.url}/exports/{job_id}/download", headers=server.headers) as resp:
            data = await resp.read()
            assert "plyr-export-" in resp.headers.get("Content-Disposition", "")
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            contents = sorted(zf.read(n) for n in zf.namelist() if n.startswith("tracks/"))
        assert contents == sorted(samples[n].read_bytes() for n in uploads)
        assert leftover_temp_files(server.settings) == []
    finally:
        await server.session.close()
        await runner.cleanup()
        await events.stop()
        await server.ctx.storage.close()
