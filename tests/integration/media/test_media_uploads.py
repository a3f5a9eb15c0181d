"""Uploads through the real HTTP app: sniffing, probing, dedupe, limits, bad input, auth, serving."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
from pathlib import Path

import aiohttp
import asyncpg
from PIL import Image
from unit.media.samples import image_bytes, png_bomb

from integration.media.conftest import (
    MediaServer,
    leftover_temp_files,
    media_settings,
    partial_objects,
    start_media_server,
    wait_for,
)

STREAMS_AS_IS = {"tone.mp3", "tone-aac.m4a", "tone.opus"}
FORMATS = {
    "tone.wav": "wav", "tone.aiff": "aiff", "tone.aifc": "aiff", "tone.flac": "flac",
    "tone.mp3": "mp3", "tone-alac.m4a": "m4a", "tone-aac.m4a": "m4a", "tone.opus": "ogg-opus",
    "tone-vorbis.ogg": "ogg-vorbis", "tone-flac.oga": "ogg-flac", "tone.webm": "webm",
}


async def test_every_audio_format_uploads(media_server: MediaServer, samples: dict[str, Path]) -> None:
    for name, path in samples.items():
        data = path.read_bytes()
        status, body = await media_server.upload("audio", data, {"title": "Tone", "artist": "Sine"})
        assert status == 201, (name, body)
        assert body["format"] == FORMATS[name], name
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        assert abs(body["durationS"] - 3.0) < 0.1, (name, body["durationS"])
        assert body["size"] == len(data)
        if name in STREAMS_AS_IS:
            assert body["streamReady"] and body["streamUrl"] == body["url"], name
            assert body["jobId"]  # a verify job: decoded once in full
        else:
            assert not body["streamReady"] and body["jobId"], name
        assert body["lossless"] == (name in {"tone.wav", "tone.aiff", "tone.aifc", "tone.flac", "tone-alac.m4a", "tone-flac.oga"}), name
        async with media_server.session.get(body["url"]) as resp:
            assert resp.status == 200
            assert await resp.read() == data
    assert body["codec"] == "opus"  # webm, the last one: the codec comes from probing
    assert leftover_temp_files(media_server.settings) == []


async def test_alac_is_told_apart_from_aac(media_server: MediaServer, samples: dict[str, Path]) -> None:
    _, alac = await media_server.upload("audio", samples["tone-alac.m4a"].read_bytes())
    _, aac = await media_server.upload("audio", samples["tone-aac.m4a"].read_bytes())
    assert (alac["codec"], alac["lossless"], alac["streamReady"]) == ("alac", True, False)
    assert (aac["codec"], aac["lossless"], aac["streamReady"]) == ("aac", False, True)


async def test_same_file_twice_is_stored_once(media_server: MediaServer, samples: dict[str, Path], pool: asyncpg.Pool) -> None:
    data = samples["tone.flac"].read_bytes()
    s1, first = await media_server.upload("audio", data)
    s2, second = await media_server.upload("audio", data)
    assert (s1, s2) == (201, 200)
    assert first["sha256"] == second["sha256"] and first["url"] == second["url"]
    assert second["jobId"] == first["jobId"]  # the live transcode job is reused
    assert await pool.fetchval("SELECT count(*) FROM media_objects") == 1
    assert await pool.fetchval("SELECT count(*) FROM media_jobs") == 1
    files = [p for p in media_server.settings.media_dir.rglob("*") if p.is_file()]
    assert len(files) == 1


async def _assert_rejected(server: MediaServer, pool: asyncpg.Pool, kind: str, data: bytes, status: int, words: str) -> None:
    got, body = await server.upload(kind, data)
    assert got == status, body
    assert words in body["message"], body
    assert set(body) == {"error", "message"}
    assert await pool.fetchval("SELECT count(*) FROM media_objects") == 0
    assert leftover_temp_files(server.settings) == []
    assert not server.settings.media_dir.exists() or not any(p.is_file() for p in server.settings.media_dir.rglob("*"))


async def test_text_file_named_mp3_is_refused(media_server: MediaServer, pool: asyncpg.Pool) -> None:
    async with media_server.session.post(
        f"{media_server.url}/upload/audio",
        data=aiohttp.FormData({"file": io.BytesIO(b"just some text\n" * 100)}, ),
        headers=media_server.headers,
    ) as resp:
        assert resp.status == 415
        assert "unrecognised" in (await resp.json())["message"]
    form = aiohttp.FormData()
    form.add_field("file", b"just some text\n" * 100, filename="song.mp3", content_type="audio/mpeg")
    async with media_server.session.post(f"{media_server.url}/upload/audio", data=form, headers=media_server.headers) as resp:
        assert resp.status == 415, await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM media_objects") == 0
    assert leftover_temp_files(media_server.settings) == []


async def test_zero_bytes(media_server: MediaServer, pool: asyncpg.Pool) -> None:
    await _assert_rejected(media_server, pool, "audio", b"", 400, "empty")
    await _assert_rejected(media_server, pool, "image", b"", 400, "empty")


async def test_truncated_and_mislabeled_audio(media_server: MediaServer, samples: dict[str, Path], pool: asyncpg.Pool) -> None:
    wav = samples["tone.wav"].read_bytes()
    await _assert_rejected(media_server, pool, "audio", wav[: len(wav) // 2], 422, "truncated")
    aiff = samples["tone.aiff"].read_bytes()
    await _assert_rejected(media_server, pool, "audio", aiff[: len(aiff) - 5000], 422, "truncated")
    m4a = samples["tone-aac.m4a"].read_bytes()
    await _assert_rejected(media_server, pool, "audio", m4a[:200], 422, "cannot be read")
    flac = samples["tone.flac"].read_bytes()
    await _assert_rejected(media_server, pool, "audio", flac[:30], 422, "")
    # an image sent as audio, audio sent as an image
    await _assert_rejected(media_server, pool, "audio", image_bytes("PNG"), 415, "expected an audio file")
    await _assert_rejected(media_server, pool, "image", samples["tone.mp3"].read_bytes(), 415, "expected an image file")
    # MP3 frame sync followed by garbage
    await _assert_rejected(media_server, pool, "audio", b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00garbage" * 100, 415, "no MPEG audio")


async def test_images(media_server: MediaServer, pool: asyncpg.Pool) -> None:
    for fmt in ("JPEG", "PNG", "WEBP", "GIF"):
        data = image_bytes(fmt, (640, 480))
        status, body = await media_server.upload("image", data)
        assert status == 201, body
        assert (body["width"], body["height"]) == (640, 480)
        async with media_server.session.get(body["thumbUrl"]) as resp:
            thumb = Image.open(io.BytesIO(await resp.read()))
            assert (thumb.format, thumb.size) == ("WEBP", (96, 96))
        async with media_server.session.get(body["displayUrl"]) as resp:
            assert Image.open(io.BytesIO(await resp.read())).size == (640, 480)
    big = image_bytes("PNG", (3000, 1500))
    _, body = await media_server.upload("image", big)
    async with media_server.session.get(body["displayUrl"]) as resp:
        assert Image.open(io.BytesIO(await resp.read())).size == (1200, 600)
    # stored once: the URLs recorded at upload come back for the same bytes
    status, again = await media_server.upload("image", big)
    assert status == 200 and again["thumbUrl"] == body["thumbUrl"]
    assert await pool.fetchval("SELECT count(*) FROM media_renditions") == 10


async def test_image_bomb_and_broken_images(media_server: MediaServer, pool: asyncpg.Pool) -> None:
    await _assert_rejected(media_server, pool, "image", png_bomb(), 422, "pixels")
    jpeg = image_bytes("JPEG", (800, 800))
    await _assert_rejected(media_server, pool, "image", jpeg[: len(jpeg) // 2], 422, "truncated")
    png = image_bytes("PNG", (800, 800))
    await _assert_rejected(media_server, pool, "image", png[:-40], 422, "")


async def test_auth_is_required(media_server: MediaServer, samples: dict[str, Path], pool: asyncpg.Pool) -> None:
    data = samples["tone.mp3"].read_bytes()
    status, body = await media_server.upload("audio", data, headers={})
    assert status == 401 and body["error"] == "AuthenticationRequired"
    status, body = await media_server.upload("audio", data, headers={"Authorization": "Bearer wrong-key"})
    assert status == 401
    status, body = await media_server.upload("audio", data, headers={"Authorization": "Bearer a.b.c"})
    assert status == 401  # no service DID configured: JWTs are not accepted
    assert await pool.fetchval("SELECT count(*) FROM media_objects") == 0


async def test_size_limit_while_streaming(pool: asyncpg.Pool, database_url: str, tmp_path: Path, samples: dict[str, Path]) -> None:
    settings = media_settings(tmp_path / "data", max_audio_bytes=200_000, chunk_bytes=64 * 1024)
    runner, server, events = await start_media_server(pool, database_url, settings)
    try:
        sent = 0

        async def body():  # chunked: no Content-Length, so the limit must hit mid-stream
            nonlocal sent
            for _ in range(1000):
                sent += 16384
                yield b"\xff" * 16384
                await asyncio.sleep(0)

        async with server.session.post(f"{server.url}/upload/audio", data=body(), headers=server.headers) as resp:
            assert resp.status == 413
            assert "limit of 200000 bytes" in (await resp.json())["message"]
        assert sent < 16384 * 1000  # refused before the whole body was sent
        # announced too large by Content-Length: refused before reading
        status, _ = await server.upload("audio", b"\x00" * 400_000)
        assert status == 413
        status, _ = await server.upload("audio", samples["tone.mp3"].read_bytes())
        assert status == 201  # under the limit
        assert leftover_temp_files(server.settings) == []
        assert await pool.fetchval("SELECT count(*) FROM media_objects") == 1
    finally:
        await server.session.close()
        await runner.cleanup()
        await events.stop()


async def test_interrupted_upload_leaves_nothing(media_server: MediaServer, pool: asyncpg.Pool, samples: dict[str, Path]) -> None:
    data = samples["tone.wav"].read_bytes()
    host, port = media_server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (f"POST /upload/audio HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {media_server.headers['Authorization'][7:]}\r\n"
         f"Content-Length: {len(data)}\r\n\r\n").encode() + data[: len(data) // 2]
    )
    await writer.drain()

    async def temp_file_exists() -> bool:
        return bool(leftover_temp_files(media_server.settings))

    await wait_for(temp_file_exists)  # the upload is in progress
    writer.close()  # the client goes away mid-body

    async def temp_file_gone() -> bool:
        return not leftover_temp_files(media_server.settings)

    await wait_for(temp_file_gone)
    assert await pool.fetchval("SELECT count(*) FROM media_objects") == 0
    assert partial_objects(media_server.settings.media_dir) == []


async def test_range_etag_and_caching(media_server: MediaServer, samples: dict[str, Path]) -> None:
    data = samples["tone.mp3"].read_bytes()
    _, body = await media_server.upload("audio", data)
    url = body["url"]
    async with media_server.session.get(url, headers={"Range": "bytes=100-199"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert await resp.read() == data[100:200]
        etag = resp.headers["ETag"]
        assert "immutable" in resp.headers["Cache-Control"]
    async with media_server.session.get(url, headers={"Range": f"bytes={len(data) - 10}-"}) as resp:
        assert resp.status == 206 and await resp.read() == data[-10:]
    async with media_server.session.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
    async with media_server.session.get(url, headers={"Range": f"bytes={len(data) + 10}-"}) as resp:
        assert resp.status == 416
    async with media_server.session.get(f"{media_server.url}/media/audio/../../etc/passwd") as resp:
        assert resp.status == 404
    async with media_server.session.get(f"{media_server.url}/media/audio/00/nothing.mp3") as resp:
        assert resp.status == 404


async def test_storage_error_is_a_clear_503(pool: asyncpg.Pool, database_url: str, tmp_path: Path, samples: dict[str, Path]) -> None:
    settings = media_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "media").write_text("not a folder")  # storage root unusable
    runner, server, events = await start_media_server(pool, database_url, settings)
    try:
        status, body = await server.upload("audio", samples["tone.mp3"].read_bytes())
        assert status == 503 and body["error"] == "StorageUnavailable"
        assert leftover_temp_files(server.settings) == []
        assert await pool.fetchval("SELECT count(*) FROM media_objects") == 0
    finally:
        await server.session.close()
        await runner.cleanup()
        await events.stop()


def test_settings_replace_is_frozen() -> None:
    s = media_settings(Path("/tmp/x"))
    assert dataclasses.replace(s, port=5).port == 5
