"""Fingerprints from the bundled ffmpeg's chromaprint muxer: the time base (measured on files of
known length), whole files past 120 s, and every way it fails cleanly."""

from __future__ import annotations

import os
import stat
from array import array
from pathlib import Path

import pytest

from media.fingerprint import FRAME_S, Fingerprint, FingerprintError, fingerprint_file
from media.fingerprint.compute import (
    ENGINE,
    HOP_SAMPLES,
    ITEM_SPAN_S,
    SAMPLE_RATE,
    chromaprint_args,
    implied_duration_s,
    run_chromaprint,
    values_from_bytes,
)
from tests.support.audio_corpus import make_noise, make_piece, make_silence, run
from unit.media.samples import image_bytes


def expected_count(seconds: float) -> int:
    """Algorithm 1: 11025 Hz, 4096-sample frames every 1365 samples, 19 frames of context."""
    return (int(seconds * SAMPLE_RATE) - 4096) // HOP_SAMPLES + 1 - 19


@pytest.mark.parametrize("seconds", [5.0, 10.0, 123.4])
async def test_time_base_is_1365_samples_at_11025_hz(tmp_path: Path, seconds: float) -> None:
    path = make_noise(tmp_path / "noise.wav", seconds)
    fp = await fingerprint_file(path)
    assert len(fp.values) == expected_count(seconds)
    assert FRAME_S == pytest.approx(0.12381, abs=1e-5)
    assert fp.duration_s == pytest.approx(seconds, abs=FRAME_S)  # from the values' own count
    assert fp.engine == ENGINE and fp.values.typecode == "I" and fp.values.itemsize == 4


async def test_whole_file_not_only_the_first_two_minutes(tmp_path: Path) -> None:
    """A tone for 150 s, then music: the music's values are there (fpcalc would stop at 120 s).
    150 s is a whole number of hops, so the music's frames fall where they do on its own."""
    piece = make_piece(tmp_path / "piece.wav", 5, 30)
    path = tmp_path / "long.flac"
    lead = 1212 * HOP_SAMPLES / SAMPLE_RATE  # 150.06 s
    run(["-f", "lavfi", "-i", f"sine=f=330:d={lead}:sample_rate=11025", "-i", str(piece),
         "-filter_complex", "[0][1]concat=n=2:v=0:a=1", str(path)])  # fmt: skip
    fp, tail = await fingerprint_file(path), await fingerprint_file(piece)
    assert len(fp.values) == expected_count(lead + 30.0)
    assert fp.values[1212 + 40 : 1212 + 200] == tail.values[40:200]


async def test_silence_is_one_repeated_value_and_short_audio_has_none(tmp_path: Path) -> None:
    fp = await fingerprint_file(make_silence(tmp_path / "silence.wav", 20))
    assert len(fp.values) > 100 and set(fp.values) == {627964279}  # align.SILENCE_VALUES
    short = await fingerprint_file(make_noise(tmp_path / "short.wav", 2.0))
    assert len(short.values) == 0 and short.duration_s == pytest.approx(2.0, abs=0.1)
    assert ITEM_SPAN_S == pytest.approx(2.724, abs=0.001) and implied_duration_s(0) == 0.0


async def test_missing_file_and_not_audio(tmp_path: Path) -> None:
    with pytest.raises(FingerprintError, match="no such file: gone.mp3"):
        await fingerprint_file(tmp_path / "gone.mp3")
    with pytest.raises(FingerprintError, match="not a file"):
        await fingerprint_file(tmp_path)
    png = tmp_path / "cover.mp3"
    png.write_bytes(image_bytes("PNG"))
    with pytest.raises(FingerprintError, match=r"not an audio file \(png\)"):
        await fingerprint_file(png)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(FingerprintError, match="not an audio file"):
        await fingerprint_file(junk)


async def test_truncated_header_is_unreadable(tmp_path: Path) -> None:
    path = make_noise(tmp_path / "n.wav", 3.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:40])  # a RIFF/WAVE header and nothing after it
    with pytest.raises(FingerprintError, match="wav file"):
        await fingerprint_file(cut)


def _script(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "fake-ffmpeg"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


async def test_ffmpeg_failures(tmp_path: Path) -> None:
    path = make_noise(tmp_path / "n.wav", 3.0)
    with pytest.raises(FingerprintError, match="exit 3") as failed:
        await fingerprint_file(path, ffmpeg=_script(tmp_path, "echo 'broken input' >&2; exit 3"))
    assert failed.value.returncode == 3 and "broken input" in str(failed.value)
    with pytest.raises(FingerprintError, match="cannot run ffmpeg"):
        await fingerprint_file(path, ffmpeg=str(tmp_path / "no-such-ffmpeg"))


async def test_time_and_output_bounds_kill_ffmpeg(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    hang = _script(tmp_path, f"echo $$ > {pid_file}; exec sleep 60")
    with pytest.raises(FingerprintError, match="longer than"):
        await run_chromaprint(hang, [], timeout_s=0.5)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
    flood = _script(tmp_path, "exec cat /dev/zero")
    with pytest.raises(FingerprintError, match="more than 65536 bytes"):
        await run_chromaprint(flood, [], timeout_s=10, max_bytes=65536)


def test_command_reads_one_audio_stream_of_a_named_demuxer_local_only() -> None:
    args = chromaprint_args(Path("/x/a.mp3"), "mp3")
    joined = " ".join(args)
    assert "-protocol_whitelist file,pipe -f mp3 -i /x/a.mp3" in joined
    assert "-map 0:a:0" in joined and "-f chromaprint -fp_format raw -algorithm 1 pipe:1" in joined


def test_values_round_trip_little_endian() -> None:
    values = array("I", [0, 1, 0xFFFFFFFF, 627964279])
    fp = Fingerprint(values, 1.0)
    assert fp.to_bytes()[:8] == b"\x00\x00\x00\x00\x01\x00\x00\x00"
    assert values_from_bytes(fp.to_bytes()) == values
    assert hash(fp) == hash(Fingerprint(array("I"), 1.0))  # the values do not take part in hashing
