"""Issue #11, media: what a hostile probe found, each pinned by a test that failed before its fix.

Real media app on loopback, real Postgres, real ffmpeg (imageio-ffmpeg's binary builds every
hostile file). Waits are on the server's own state (an upload in flight, a job's row), not on
wall-clock time alone.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from integration.media.conftest import (
    MediaServer,
    media_settings,
    start_media_server,
)
from unit.media.samples import FFMPEG


@pytest.fixture
async def server(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[MediaServer]:
    runner, srv, events = await start_media_server(pool, database_url, media_settings(tmp_path / "data"))
    try:
        yield srv
    finally:
        await srv.session.close()
        await runner.cleanup()
        await events.stop()
        await srv.ctx.storage.close()


def _ffmpeg(out: Path, *args: str) -> bytes:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args, str(out)], check=True)
    return out.read_bytes()


def _tone(seconds: float = 1.0) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate=44100", "-ac", "2"]


async def _post(srv: MediaServer, kind: str, data: bytes, params: dict[str, str] | None = None) -> tuple[int, Any, str]:
    async with srv.session.post(f"{srv.url}/upload/{kind}", data=data, params=params or {}, headers=srv.headers) as resp:
        text = await resp.text()
        body: Any = None
        if resp.content_type == "application/json":
            body = await resp.json()
        return resp.status, body, text


# -- 1. probing reads structured data, never text an uploader controls ------------------------

async def test_probe_ignores_duration_in_metadata(server: MediaServer, tmp_path: Path) -> None:
    data = _ffmpeg(tmp_path / "a.mp3", *_tone(1.0), "-c:a", "libmp3lame", "-b:a", "128k",
                   "-metadata", "title=Duration: 99:59:59.00, start: 0, bitrate: 1 kb/s")
    status, body, text = await _post(server, "audio", data)
    assert status == 201, text
    assert body["durationS"] == pytest.approx(1.0, abs=0.1)
    # ...and the verify job (a full decode) agrees with it instead of calling the file truncated.
    await server.run_jobs()
    job = await server.job(body["jobId"])
    assert job.status == "done", job.error


async def test_probe_ignores_audio_stream_in_metadata(server: MediaServer, tmp_path: Path) -> None:
    data = _ffmpeg(tmp_path / "v.mkv", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=5",
                   "-c:v", "mjpeg", "-metadata",
                   "title=x\n  Stream #0:1: Audio: flac, 48000 Hz, stereo, s16", "-f", "matroska")
    status, body, text = await _post(server, "audio", data)
    assert status in (415, 422), text
    assert set(body) == {"error", "message"}
    assert await server.ctx.pool.fetchval("SELECT count(*) FROM media_objects") == 0


async def test_probe_survives_malformed_stream_text_in_metadata(server: MediaServer, tmp_path: Path) -> None:
    data = _ffmpeg(tmp_path / "b.mp3", *_tone(1.0), "-c:a", "libmp3lame", "-b:a", "128k",
                   "-metadata", "title=x Stream #0:0: Audio: mp3, 12x Hz")
    status, body, text = await _post(server, "audio", data)
    assert status == 201, text
    assert (body["codec"], body["sampleRate"]) == ("mp3", 44100)
