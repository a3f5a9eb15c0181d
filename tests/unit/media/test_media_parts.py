"""Unit tests of the media parts that need no database: probe parsing, the transcode decision,
receiving with limits, image checks, storage keys, auth by server key, names of exports."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from core.errors import ConfigError
from media.auth import Authenticator, Unauthorized
from media.exports import _safe_name, export_filename
from media.ffmpeg import FFmpegError, run_ffmpeg
from media.images import ImageError, process_image
from media.jobs import backoff_s
from media.probe import read_probe
from media.receive import TooLarge, UploadTimeout, receive
from media.settings import MediaSettings
from media.storage import LocalStorage, StorageError, valid_key
from media.transcode import is_lossless, mp3_command, needs_transcode


def test_read_probe_from_the_container(tmp_path: Path) -> None:
    """ALAC in M4A with a cover and tags, read from libavformat's structs (see media/probe.py)."""
    import subprocess

    from unit.media.samples import FFMPEG

    out = tmp_path / "x.m4a"
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "sine=duration=2.5:sample_rate=48000",
         "-f", "lavfi", "-i", "testsrc=size=32x32:duration=1:rate=1",
         "-map", "0", "-map", "1", "-ac", "2", "-c:a", "alac", "-c:v", "mjpeg",
         "-disposition:v", "attached_pic", "-metadata", "title=A Song", "-metadata", "artist=Someone",
         "-metadata:s:a", "title=not the track title", str(out)],
        check=True,
    )
    p = read_probe(str(out), "m4a")
    assert p.duration_s == pytest.approx(2.5, abs=0.05)
    assert (p.codec, p.sample_rate, p.channels) == ("alac", 48000, "stereo")
    assert p.bit_rate and p.bit_rate > 0
    assert p.has_cover
    assert p.tags == {"title": "A Song", "artist": "Someone"}


@pytest.mark.parametrize(
    "fmt,codec,transcode,lossless",
    [
        ("mp3", "mp3", False, False), ("aac", "aac", False, False), ("ogg-opus", "opus", False, False),
        ("m4a", "aac", False, False), ("m4a", "alac", True, True), ("wav", "pcm_s16le", True, True),
        ("aiff", "pcm_s16be", True, True), ("flac", "flac", True, True), ("ogg-flac", "flac", True, True),
        ("ogg-vorbis", "vorbis", True, False), ("webm", "opus", True, False), ("matroska", "aac", True, False),
    ],
)
def test_transcode_decision(fmt: str, codec: str, transcode: bool, lossless: bool) -> None:
    assert needs_transcode(fmt, codec) is transcode
    assert is_lossless(fmt, codec) is lossless


def test_mp3_command_is_local_only_cbr_320_44k() -> None:
    args = mp3_command(Path("/in.flac"), Path("/out.mp3"), title="T", artist="A", cover=Path("/c.webp"), source_format="flac")
    assert args[:6] == ["-protocol_whitelist", "file,pipe", "-f", "flac", "-i", "/in.flac"]  # no guessing
    assert args[6:12] == ["-protocol_whitelist", "file,pipe", "-f", "webp_pipe", "-i", "/c.webp"]
    assert args.count("-protocol_whitelist") == 2  # the cover input too
    joined = " ".join(args)
    assert "-c:a libmp3lame -b:a 320k -ar 44100" in joined and "-f mp3" in joined
    assert "-metadata title=T" in joined and "-metadata artist=A" in joined and "attached_pic" in joined
    assert "-progress pipe:1" in joined


def _files(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def _reader(pieces: list[bytes]):
    it = iter(pieces)

    async def read() -> bytes:
        await asyncio.sleep(0)
        return next(it, b"")

    return read


async def test_receive_hashes_and_keeps_the_head(tmp_path: Path) -> None:
    pieces = [bytes([i]) * 50_000 for i in range(10)]
    got = await receive(_reader(pieces), tmp_dir=tmp_path, limit=10**6, chunk_bytes=120_000)
    data = b"".join(pieces)
    import hashlib

    assert got.size == len(data) and got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.path.read_bytes() == data and got.head == data[:65536]
    got.discard()
    assert _files(tmp_path) == []


async def test_receive_stops_at_the_limit_and_removes_the_file(tmp_path: Path) -> None:
    served = 0

    async def endless() -> bytes:
        nonlocal served
        served += 1
        return b"x" * 10_000

    with pytest.raises(TooLarge):
        await receive(endless, tmp_dir=tmp_path, limit=55_000, chunk_bytes=20_000)
    assert served == 6  # stopped on the first piece past the limit
    assert _files(tmp_path) == []


async def test_receive_removes_the_file_when_the_client_goes_away(tmp_path: Path) -> None:
    calls = 0

    async def breaks() -> bytes:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ConnectionResetError("client went away")
        return b"y" * 1000

    with pytest.raises(ConnectionResetError):
        await receive(breaks, tmp_dir=tmp_path, limit=10**6, chunk_bytes=10)
    assert _files(tmp_path) == []


async def test_receive_cuts_off_a_stalled_or_trickling_sender(tmp_path: Path) -> None:
    stall = asyncio.Event()  # never set: the sender stops after one piece

    async def stalls() -> bytes:
        if stalls.sent:  # type: ignore[attr-defined]
            await stall.wait()
        stalls.sent = True  # type: ignore[attr-defined]
        return b"z" * 100

    stalls.sent = False  # type: ignore[attr-defined]
    with pytest.raises(UploadTimeout, match="no data arrived for 0.2 s"):
        await receive(stalls, tmp_dir=tmp_path, limit=10**6, chunk_bytes=10, idle_timeout_s=0.2)
    assert _files(tmp_path) == []

    async def trickles() -> bytes:
        await asyncio.sleep(0.02)  # far under the rate; the idle timeout is far away
        return b"t"

    with pytest.raises(UploadTimeout, match="slower than 1000 bytes/s"):
        await receive(trickles, tmp_dir=tmp_path, limit=10**6, chunk_bytes=10,
                      idle_timeout_s=60.0, min_rate=1000, grace_s=0.1)  # idle: never, even when loaded
    assert _files(tmp_path) == []


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def test_image_that_declares_huge_dimensions_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(ImageError, match="pixels"):
        process_image(path)
    path.write_bytes(_png_header_only(9000, 9000))  # 81 MP: above our 40 MP limit
    with pytest.raises(ImageError, match="limit"):
        process_image(path)


def test_image_renditions(tmp_path: Path) -> None:
    path = tmp_path / "c.png"
    Image.new("RGBA", (300, 150), (1, 2, 3, 128)).save(path)
    rend = process_image(path)
    thumb = Image.open(io.BytesIO(rend.thumb))
    assert (thumb.format, thumb.size) == ("WEBP", (96, 96))
    assert Image.open(io.BytesIO(rend.display)).size == (300, 150)
    path.write_bytes(b"GIF89a" + b"\x00" * 20)
    with pytest.raises(ImageError):
        process_image(path)


def test_storage_keys_cannot_escape(tmp_path: Path) -> None:
    assert valid_key("audio/ab/abc.mp3")
    for bad in ("../x", "audio/../../etc", "/abs", "a//b", "A/B", "a/.hidden", "a b", ""):
        assert not valid_key(bad), bad
    with pytest.raises(StorageError):
        LocalStorage(tmp_path, "http://x").path("../escape")


async def test_local_put_is_atomic_and_ranges_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(bytes(range(256)) * 10_000)
    storage = LocalStorage(tmp_path / "media", "http://m/")
    await storage.put_file("a/b/c.bin", src, "application/octet-stream")
    assert storage.url("a/b/c.bin") == "http://m/media/a/b/c.bin"
    got = b"".join([c async for c in storage.open_range("a/b/c.bin", 1000, 2_000_999)])
    assert got == src.read_bytes()[1000:2_001_000]
    info = await storage.stat("a/b/c.bin")
    assert info is not None and info.size == 2_560_000
    await storage.delete("a/b/c.bin")
    await storage.delete("a/b/c.bin")
    assert await storage.stat("a/b/c.bin") is None
    assert [p.name for p in (tmp_path / "media" / "a" / "b").iterdir()] == []


async def test_ffmpeg_runner_kills_on_timeout_and_reports_failures(tmp_path: Path) -> None:
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(FFmpegError, match="longer than 0.5 s"):
        await run_ffmpeg(str(hang), [], timeout_s=0.5)
    assert loop.time() - start < 5
    with pytest.raises(FFmpegError, match="cannot run ffmpeg"):
        await run_ffmpeg(str(tmp_path / "missing"), [], timeout_s=5)
    fail = tmp_path / "fail"
    fail.write_text("#!/bin/sh\necho 'Invalid data found' >&2\nexit 3\n")
    fail.chmod(0o755)
    with pytest.raises(FFmpegError, match="exit 3.*Invalid data found"):
        await run_ffmpeg(str(fail), [], timeout_s=5)


def _settings(**kw: object) -> MediaSettings:
    from integration.media.conftest import media_settings

    return dataclasses.replace(media_settings(Path("/tmp/unused")), **kw)  # type: ignore[arg-type]


async def test_server_key_auth() -> None:
    auth = Authenticator(_settings(server_key="secret-key", service_did=None))
    caller = await auth.authenticate({"Authorization": "Bearer secret-key", "X-Plyr-Did": "did:plc:abc"}, "m")
    assert caller.trusted and caller.did == "did:plc:abc"
    for headers in ({}, {"Authorization": "Bearer secret-kez"}, {"Authorization": "Basic secret-key"},
                    {"Authorization": "Bearer secret-key", "X-Plyr-Did": "not a did"}):
        with pytest.raises(Unauthorized):
            await auth.authenticate(headers, "m")
    with pytest.raises(ConfigError):
        Authenticator(_settings(server_key=None, service_did=None))


def test_settings_fail_on_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLYR_STORAGE", "ftp")
    with pytest.raises(ConfigError, match="local or s3"):
        MediaSettings.from_env()
    monkeypatch.setenv("PLYR_STORAGE", "s3")
    monkeypatch.delenv("PLYR_S3_BUCKET", raising=False)
    with pytest.raises(ConfigError, match="PLYR_S3_BUCKET"):
        MediaSettings.from_env()
    monkeypatch.setenv("PLYR_STORAGE", "local")
    monkeypatch.setenv("PLYR_MEDIA_PORT", "9999")
    s = MediaSettings.from_env()
    assert s.port == 9999 and s.max_audio_bytes == 1024**3 and s.max_image_bytes == 20 * 1024**2
    assert s.chunk_bytes == 8 * 1024**2 and s.workers == 2


def test_export_names_and_backoff() -> None:
    assert export_filename("did:plc:AbC123", dt.date(2026, 11, 24)) == "plyr-export-did-plc-abc123-2026-11-24.zip"
    assert _safe_name('a/b\\c:d*e?"f<g>h|i') == "a b c d e f g h i"
    assert _safe_name("...") == "untitled"
    assert [backoff_s(n) for n in (1, 2, 3)] == [5, 10, 20] and backoff_s(50) == 600
