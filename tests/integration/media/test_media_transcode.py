"""Transcoding through jobs with the real ffmpeg: MP3 320k CBR 44.1 kHz with tags and cover,
progress over SSE, and the failures: ffmpeg errors, hangs, truncated masters, storage errors."""

from __future__ import annotations

import asyncio
import dataclasses
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from unit.media.samples import FFMPEG, image_bytes, make_noise

from integration.media.conftest import MediaServer, leftover_temp_files, partial_objects
from media.ingest import stream_key
from media.probe import probe_file
from media.sniff import _mpeg_frame_length
from media.worker import Worker

NEEDS_STREAM = ["tone.wav", "tone.aiff", "tone.aifc", "tone.flac", "tone-alac.m4a", "tone-vorbis.ogg", "tone-flac.oga", "tone.webm"]


async def _mp3_info(exe: str, path: Path) -> Any:
    return await probe_file(path)


async def test_stream_rendition_is_mp3_320_cbr_with_tags_and_cover(media_server: MediaServer, samples: dict[str, Path], tmp_path: Path) -> None:
    s, cover = await media_server.upload("image", image_bytes("JPEG", (500, 500)))
    assert s == 201
    status, body = await media_server.upload(
        "audio", samples["tone.flac"].read_bytes(),
        {"title": "Sine Wave", "artist": "The Oscillators", "cover": cover["sha256"]},
    )
    assert status == 201 and body["jobId"]
    async with media_server.session.get(body["streamUrl"]) as resp:
        assert resp.status == 404  # not made yet
    assert await media_server.run_jobs() == 1
    job = await media_server.job(body["jobId"])
    assert job.status == "done", job.error
    assert job.result and job.result["streamUrl"] == body["streamUrl"]
    out = tmp_path / "stream.mp3"
    async with media_server.session.get(body["streamUrl"]) as resp:
        assert resp.status == 200
        out.write_bytes(await resp.read())
    info = await _mp3_info(media_server.ctx.ffmpeg, out)
    assert info.codec == "mp3" and info.sample_rate == 44100 and info.channels == "stereo"
    assert info.tags["title"] == "Sine Wave" and info.tags["artist"] == "The Oscillators"
    assert info.has_cover
    assert abs((info.duration_s or 0) - 3.0) < 0.1
    text = subprocess.run([FFMPEG, "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr  # noqa: ASYNC221
    assert "320 kb/s" in text
    # CBR: every MPEG frame header carries the 320 kbps bitrate index (0xE for MPEG-1 layer III)
    data = out.read_bytes()
    tag = 0
    for b in data[6:10]:
        tag = (tag << 7) | b
    pos, indexes, frames = 10 + tag, set(), 0
    pos += _mpeg_frame_length(data[pos : pos + 4]) or 0  # the Xing/Info frame first
    while pos + 4 <= len(data) and (length := _mpeg_frame_length(data[pos : pos + 4])):
        indexes.add(data[pos + 2] >> 4)
        frames += 1
        pos += length
    assert indexes == {0xE} and frames > 100
    # the master is kept
    async with media_server.session.get(body["url"]) as resp:
        assert await resp.read() == samples["tone.flac"].read_bytes()
    assert leftover_temp_files(media_server.settings) == []


async def test_every_lossless_or_unplayable_format_gets_a_stream(media_server: MediaServer, samples: dict[str, Path], tmp_path: Path) -> None:
    uploads = {}
    for name in NEEDS_STREAM:
        status, body = await media_server.upload("audio", samples[name].read_bytes())
        assert status == 201 and body["jobId"], name
        uploads[name] = body
    assert await media_server.run_jobs() == len(NEEDS_STREAM)
    for name, body in uploads.items():
        job = await media_server.job(body["jobId"])
        assert job.status == "done", (name, job.error)
        out = tmp_path / f"{name}.mp3"
        async with media_server.session.get(body["streamUrl"]) as resp:
            out.write_bytes(await resp.read())
        info = await _mp3_info(media_server.ctx.ffmpeg, out)
        assert (info.codec, info.sample_rate) == ("mp3", 44100), name
        assert abs((info.duration_s or 0) - 3.0) < 0.15, (name, info.duration_s)


async def test_progress_over_sse_and_json(media_server: MediaServer, tmp_path: Path) -> None:
    long_wav = tmp_path / "long.wav"
    await asyncio.to_thread(make_noise, long_wav, 240, [])
    _, body = await media_server.upload("audio", long_wav.read_bytes())
    job_id = body["jobId"]
    events: list[tuple[str, dict[str, Any]]] = []

    async def listen() -> None:
        async with media_server.session.get(f"{media_server.url}/jobs/{job_id}/events", headers=media_server.headers) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            name = None
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    events.append((name, orjson.loads(line[6:])))

    listener = asyncio.create_task(listen())
    for _ in range(600):  # until the stream's first event arrives (progress, not a fixed sleep)
        if events or listener.done():
            break
        await asyncio.sleep(0.05)
    assert events and events[0][0] == "progress" and events[0][1]["status"] == "queued"
    assert await media_server.run_jobs() == 1
    await asyncio.wait_for(listener, 60)
    assert events[-1][0] == "done" and events[-1][1]["result"]["streamUrl"] == body["streamUrl"]
    progress = [e["progress"] for n, e in events if n == "progress" and e["status"] == "running"]
    assert any(0 < p < 1 for p in progress), events
    assert progress == sorted(progress)
    async with media_server.session.get(f"{media_server.url}/jobs/{job_id}", headers=media_server.headers) as resp:
        state = await resp.json()
        assert state["status"] == "done" and state["progress"] == 1
    async with media_server.session.get(f"{media_server.url}/jobs/999999/events", headers=media_server.headers) as resp:
        assert resp.status == 404
    async with media_server.session.get(f"{media_server.url}/jobs/abc") as resp:
        assert resp.status == 404


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


async def _upload_then_work_with(media_server: MediaServer, samples: dict[str, Path], **ctx_changes: Any) -> Any:
    _, body = await media_server.upload("audio", samples["tone.wav"].read_bytes())
    settings_changes = ctx_changes.pop("settings", {})
    ctx = dataclasses.replace(media_server.ctx, settings=dataclasses.replace(media_server.ctx.settings, **settings_changes), **ctx_changes)
    started = time.monotonic()
    await Worker(ctx, name="w").run_once()
    return body, await media_server.job(body["jobId"]), time.monotonic() - started


async def test_ffmpeg_failure_fails_the_job_with_its_reason(media_server: MediaServer, samples: dict[str, Path], tmp_path: Path) -> None:
    fake = _script(tmp_path / "ffmpeg-fails", 'echo "Conversion failed: something broke" >&2; exit 1')
    body, job, _ = await _upload_then_work_with(media_server, samples, ffmpeg=fake)
    assert job.status == "failed" and "something broke" in (job.error or "")
    assert job.attempts == 1  # deterministic failure: not retried
    assert not await media_server.ctx.storage.exists(stream_key(body["sha256"]))
    assert leftover_temp_files(media_server.settings) == []


async def test_ffmpeg_hang_is_killed_at_the_wall_clock_limit(media_server: MediaServer, samples: dict[str, Path], tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    fake = _script(tmp_path / "ffmpeg-hangs", f"echo $$ > {pidfile}; exec sleep 60")
    body, job, elapsed = await _upload_then_work_with(
        media_server, samples, ffmpeg=fake, settings={"transcode_timeout_s": 1.0}
    )
    assert job.status == "failed" and "longer than 1 s" in (job.error or "")
    assert elapsed < 10
    pid = int(pidfile.read_text())
    await asyncio.sleep(0.1)
    proc = Path(f"/proc/{pid}")
    assert not proc.exists() or (proc / "stat").read_text().split()[2] == "Z"  # noqa: ASYNC240
    assert not await media_server.ctx.storage.exists(stream_key(body["sha256"]))
    assert leftover_temp_files(media_server.settings) == []


async def test_truncated_master_fails_its_transcode(media_server: MediaServer, tmp_path: Path, pool: asyncpg.Pool) -> None:
    flac = tmp_path / "noise.flac"
    await asyncio.to_thread(make_noise, flac, 10, ["-c:a", "flac"])
    data = flac.read_bytes()
    status, body = await media_server.upload("audio", data[: len(data) // 2])
    assert status == 201, body  # the header looks fine: STREAMINFO says 10 s
    await media_server.run_jobs()
    job = await media_server.job(body["jobId"])
    assert job.status == "failed" and "truncated" in (job.error or ""), job.error
    assert not await media_server.ctx.storage.exists(stream_key(body["sha256"]))
    assert await pool.fetchval("SELECT count(*) FROM media_renditions") == 0


async def test_storage_error_is_retried_and_leaves_no_partial(media_server: MediaServer, samples: dict[str, Path], pool: asyncpg.Pool) -> None:
    _, body = await media_server.upload("audio", samples["tone.aiff"].read_bytes())
    target = media_server.settings.media_dir / stream_key(body["sha256"])
    (target / "blocker").mkdir(parents=True)  # a non-empty folder where the rendition must go
    await media_server.run_jobs()
    job = await media_server.job(body["jobId"])
    assert job.status == "queued" and "cannot store" in (job.error or ""), job.error
    assert partial_objects(media_server.settings.media_dir) == []
    assert leftover_temp_files(media_server.settings) == []
    # the storage recovers: the retry succeeds
    (target / "blocker").rmdir()
    target.rmdir()
    await pool.execute("UPDATE media_jobs SET run_after = now()")
    await media_server.run_jobs()
    job = await media_server.job(body["jobId"])
    assert job.status == "done" and job.attempts == 2
    assert target.stat().st_size > 100_000


async def test_passthrough_uploads_are_verified_by_decoding(media_server: MediaServer, tmp_path: Path, pool: asyncpg.Pool) -> None:
    mp3 = tmp_path / "noise.mp3"
    await asyncio.to_thread(make_noise, mp3, 60, ["-c:a", "libmp3lame", "-b:a", "192k"])
    data = mp3.read_bytes()
    status, whole = await media_server.upload("audio", data)
    assert status == 201 and whole["streamReady"] and whole["jobId"]
    # cut in half: the Xing header still declares 60 s
    status, cut = await media_server.upload("audio", data[: len(data) // 2])
    assert status == 201 and abs(cut["durationS"] - 60) < 1, cut
    assert await media_server.run_jobs() == 2
    good, bad = await media_server.job(whole["jobId"]), await media_server.job(cut["jobId"])
    assert good.status == "done" and good.result and good.result["verified"]
    assert bad.status == "failed" and "truncated" in (bad.error or ""), bad.error
    assert await pool.fetchval("SELECT probe->>'verified' FROM media_objects WHERE sha256 = $1", whole["sha256"]) == "true"
    # once verified, the same bytes need no second check
    status, again = await media_server.upload("audio", data)
    assert status == 200 and again["jobId"] is None
