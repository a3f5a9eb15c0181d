"""Issue #11, media: what a hostile probe found, each pinned by a test that failed before its fix.

Real media app on loopback, real Postgres, real ffmpeg (imageio-ffmpeg's binary builds every
hostile file). Waits are on the server's own state (an upload in flight, a job's row), not on
wall-clock time alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from integration.media.conftest import (
    OWNER,
    SERVER_KEY,
    MediaServer,
    media_settings,
    running_media_server,
    wait_for,
)
from unit.media.samples import FFMPEG


@pytest.fixture
async def server(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[MediaServer]:
    async with running_media_server(pool, database_url, media_settings(tmp_path / "data")) as (_, srv):
        yield srv


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


# -- 4. the database going away answers JSON 503 + Retry-After, and names no host or database --

async def test_database_away_answers_json_503(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> None:
    from integration.media.conftest import free_port

    async with running_media_server(pool, database_url, media_settings(tmp_path / "data")) as (_, srv):
        secret_db = "plyr_secret_dbname"
        dead_port = free_port()  # nothing listens there: every connection is refused
        dead = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{dead_port}/{secret_db}", min_size=0)
        srv.ctx.pool = dead
        try:
            tone = _ffmpeg(tmp_path / "t.mp3", *_tone(1.0), "-c:a", "libmp3lame")
            for method, path, data in [
                ("POST", "/upload/audio", tone),
                ("GET", "/jobs/1", None),
                ("POST", "/exports", None),
                ("GET", "/health", None),
            ]:
                async with srv.session.request(method, f"{srv.url}{path}", data=data, headers=srv.headers) as resp:
                    text = await resp.text()
                    assert resp.status == 503, (path, resp.status, text)
                    assert resp.content_type == "application/json", (path, text)
                    assert resp.headers.get("Retry-After"), path
                    body = await resp.json()
                    assert body["error"] == "DatabaseUnavailable", (path, body)
                    for secret in (secret_db, str(dead_port), "127.0.0.1", "Connect call failed"):
                        assert secret not in text, (path, text)
            assert list(srv.settings.tmp_dir.iterdir()) == []  # the upload's temp file went too
        finally:
            await dead.close()


# -- 5. what used to answer a plain-text 500 answers a JSON 400; anything unexpected a JSON 500 --

async def test_media_500s_become_json_errors(server: MediaServer, tmp_path: Path) -> None:
    tone = _ffmpeg(tmp_path / "t.mp3", *_tone(1.0), "-c:a", "libmp3lame")
    # multipart without a boundary
    headers = {**server.headers, "Content-Type": "multipart/form-data"}
    async with server.session.post(f"{server.url}/upload/audio", data=tone, headers=headers) as resp:
        text = await resp.text()
        assert resp.status == 400, text
        assert (await resp.json())["error"] == "InvalidRequest"
    # a NUL (or any control character) in ?title= / ?artist=
    for params in ({"title": "a\x00b"}, {"artist": "x\x00"}, {"title": "bell\x07"}):
        status, body, text = await _post(server, "audio", tone, params)
        assert status == 400, (params, text)
        assert set(body) == {"error", "message"}
    assert await server.ctx.pool.fetchval("SELECT count(*) FROM media_objects") == 0
    # an unknown route is a JSON 404 too, not aiohttp's text
    async with server.session.get(f"{server.url}/nowhere") as resp:
        assert resp.status == 404 and resp.content_type == "application/json"


# -- 3. a full disk is transient: 503 + Retry-After for uploads, jobs wait and retry ------------

@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at `path`: a disk that really fills up (needs root, as tests run here)."""
    from tests.conftest import skip_unless_required

    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        skip_unless_required(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """Fill `folder`'s filesystem until about `leave` bytes are free."""
    import shutil

    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return filler


async def test_full_disk_is_transient(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    wav = _ffmpeg(tmp_path / "n.wav", "-f", "lavfi", "-i", "anoisesrc=d=12:a=0.3:sample_rate=44100",
                  "-ac", "2", "-c:a", "pcm_s16le")  # ~2 MB; its MP3 rendition ~480 KB
    with _tmpfs(data_dir / "tmp", "8m") as tmp, _tmpfs(data_dir / "media", "16m") as media:
        async with running_media_server(pool, database_url, media_settings(data_dir)) as (_, srv):
            # (a) no room for the upload's temp file
            filler = _fill(tmp, 512 * 1024)
            status, body, text = await _post(srv, "audio", wav)
            assert status == 503, text
            assert body["error"] == "InsufficientStorage" and "no space left on device" in body["message"]
            filler.unlink()
            assert list(tmp.iterdir()) == []
            # (b) no room in storage: the same answer, not "storage unavailable" without a hint
            filler = _fill(media, 512 * 1024)
            async with srv.session.post(f"{srv.url}/upload/audio", data=wav, headers=srv.headers) as resp:
                text = await resp.text()
                assert resp.status == 503, text
                assert resp.headers.get("Retry-After"), resp.headers
                assert "no space left on device" in (await resp.json())["message"]
            filler.unlink()
            # (c) the transcode runs out of room: the job waits and retries, it does not fail
            status, body, text = await _post(srv, "audio", wav)
            assert status == 201, text
            filler = _fill(tmp, 128 * 1024)
            await srv.run_jobs(limit=1)
            job = await srv.job(body["jobId"])
            assert job.status == "queued", (job.status, job.error)
            assert job.error and "no space left on device" in job.error
            assert job.attempts == 0  # a full disk costs the job none of its attempts
            assert job.run_after > job.updated_at  # later, not at once
            filler.unlink()
            assert list(tmp.iterdir()) == []
            await pool.execute("UPDATE media_jobs SET run_after = now() WHERE id = $1", job.id)
            await srv.run_jobs(limit=1)
            job = await srv.job(body["jobId"])
            assert job.status == "done", job.error


# -- 2. uploads have a read deadline and in-flight caps -----------------------------------------

async def _open_upload(srv: MediaServer, did: str, announced: int, first: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Start a raw upload that announces `announced` bytes and sends only `first`."""
    port = int(srv.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (f"POST /upload/audio HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SERVER_KEY}\r\n"
         f"X-Plyr-Did: {did}\r\nContent-Length: {announced}\r\n\r\n").encode() + first
    )
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader, within: float = 15.0) -> tuple[int, dict[str, str], Any]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    lines = head.decode().strip().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), within)
    return int(lines[0].split()[1]), headers, orjson.loads(body)


def _uploads_in_flight(app: web.Application) -> int:
    from media.http import UPLOAD_SLOTS

    return app[UPLOAD_SLOTS].total


async def _in_flight(app: web.Application, want: int) -> None:
    await wait_for(lambda: _async(_uploads_in_flight(app) == want), within=15)


async def _async(value: bool) -> bool:
    return value


async def test_uploads_have_deadlines_and_caps(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> None:
    strict = media_settings(tmp_path / "a", upload_idle_timeout_s=0.5, upload_min_rate_bytes_s=2000,
                            upload_rate_grace_s=1.0)
    async with running_media_server(pool, database_url, strict) as (runner, srv):
        # A stalled upload: 10 of 100000 bytes, then nothing. Answered 408 once idle too long.
        reader, writer = await _open_upload(srv, OWNER, 100_000, b"0123456789")
        await _in_flight(runner.app, 1)
        started = asyncio.get_running_loop().time()
        status, headers, body = await _answer(reader)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and hung up, no lingering
        stalled_for = asyncio.get_running_loop().time() - started
        writer.close()
        assert (status, body["error"]) == (408, "RequestTimeout"), body
        assert stalled_for < 5  # the idle timeout is 0.5 s; no lingering read of the rest
        await _in_flight(runner.app, 0)
        await wait_for(lambda: _async(list(srv.settings.tmp_dir.iterdir()) == []))
        # A trickle: a byte every 0.1 s never trips the idle timeout, but falls under the rate.
        reader, writer = await _open_upload(srv, OWNER, 100_000, b"x")
        await _in_flight(runner.app, 1)
        answer = asyncio.create_task(_answer(reader, within=30))
        sent = 1
        while not answer.done() and sent < 1000:
            writer.write(b"x")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            sent += 1
            await asyncio.wait({answer}, timeout=0.1)
        status, headers, body = await answer
        writer.close()
        assert (status, body["error"]) == (408, "RequestTimeout"), body
        assert sent < 200  # stopped within a few seconds of the 1 s grace, not at the end
        await wait_for(lambda: _async(list(srv.settings.tmp_dir.iterdir()) == []))

    capped = media_settings(tmp_path / "b", uploads_per_caller=2, uploads_max=3, upload_idle_timeout_s=60.0)
    async with running_media_server(pool, database_url, capped) as (runner, srv):
        held = []
        try:
            for did in (OWNER, OWNER, "did:plc:another00000000000000000"):
                held.append(await _open_upload(srv, did, 100_000, b"0123"))
            await _in_flight(runner.app, 3)
            # a third upload of the same caller, then a fourth one overall (another caller)
            for did in (OWNER, "did:plc:third0000000000000000000"):
                reader, writer = await _open_upload(srv, did, 100_000, b"0123")
                status, headers, body = await _answer(reader)
                writer.close()
                assert (status, body["error"]) == (429, "TooManyUploads"), body
                assert int(headers["retry-after"]) > 0
            assert _uploads_in_flight(runner.app) == 3
            assert len(list(srv.settings.tmp_dir.iterdir())) == 3  # no temp file for the refused
        finally:
            for _, writer in held:
                writer.close()
            await _in_flight(runner.app, 0)


# -- 6. exports: a trusted ?did= is checked, identical exports are reused, names are plain -----

async def _track(pool: asyncpg.Pool, did: str, rkey: str, title: str, audio_url: str) -> None:
    await pool.execute(
        """INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, file_type, audio_url,
                               record, created_at, sort_at)
           VALUES ($1, $2, $3, 'bafyreicid', '3k2a', $4, $5, 'mp3', $6, '{}'::jsonb, now(), now())""",
        f"at://{did}/fm.plyr.track/{rkey}", did, rkey, title, "Art\u200fist\u2066", audio_url,
    )


async def test_exports_check_did_reuse_and_strip_bidi(server: MediaServer, pool: asyncpg.Pool, tmp_path: Path) -> None:
    import io
    import unicodedata
    import zipfile

    async def create(params: dict[str, str] | None = None) -> tuple[int, Any]:
        async with server.session.post(f"{server.url}/exports", params=params or {}, headers=server.headers) as resp:
            return resp.status, await resp.json()

    for bad in ("not-a-did", "did:plc:x\n", "did:PLC:abc", "did:plc:" + "a" * 3000):
        status, body = await create({"did": bad})
        assert (status, body["error"]) == (400, "InvalidRequest"), (bad, body)
    assert await pool.fetchval("SELECT count(*) FROM media_jobs") == 0

    tone = _ffmpeg(tmp_path / "t.mp3", *_tone(1.0), "-c:a", "libmp3lame")
    _, up = await server.upload("audio", tone)
    await server.run_jobs()
    await _track(pool, OWNER, "3k001", "\u202eevil\u202c gnp.exe\u2069 \x7f\u0085ok", up["url"])
    status, first = await create()
    assert status == 202
    await server.run_jobs()
    assert (await server.job(first["jobId"])).status == "done"

    # nothing changed: the same export again, not another zip kept for a week
    status, again = await create()
    assert again["jobId"] == first["jobId"] and again.get("reused") is True, again
    assert await server.run_jobs() == 0
    # the trusted caller naming the same account gets it too
    status, named = await create({"did": OWNER})
    assert named["jobId"] == first["jobId"]
    # a new track is a new state: a new export
    await _track(pool, OWNER, "3k002", "Second", up["url"])
    status, second = await create()
    assert status == 202 and second["jobId"] != first["jobId"]
    await server.run_jobs()
    zips = [p for p in server.settings.media_dir.rglob("*.zip")]
    assert len(zips) == 2

    async with server.session.get(f"{server.url}/exports/{second['jobId']}/download", headers=server.headers) as resp:
        assert resp.status == 200
        data = await resp.read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
    assert any("evil" in n for n in names), names
    for name in names:
        assert not [ch for ch in name if unicodedata.category(ch) in ("Cc", "Cf")], repr(name)
