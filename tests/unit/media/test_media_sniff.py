"""Sniffing decides the format from the bytes: real files made by ffmpeg and Pillow, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from media.sniff import HEAD_BYTES, SniffError, check_declared_size, sniff
from unit.media.samples import AUDIO, image_bytes, make_all_audio

EXPECTED = {
    "tone.wav": "wav",
    "tone.aiff": "aiff",
    "tone.aifc": "aiff",
    "tone.flac": "flac",
    "tone.mp3": "mp3",
    "tone-alac.m4a": "m4a",
    "tone-aac.m4a": "m4a",
    "tone.opus": "ogg-opus",
    "tone-vorbis.ogg": "ogg-vorbis",
    "tone-flac.oga": "ogg-flac",
    "tone.webm": "webm",
}


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_all_audio(tmp_path_factory.mktemp("sniff"))


def test_every_sample_is_covered() -> None:
    assert set(EXPECTED) == set(AUDIO)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_audio_formats_from_bytes(audio_files: dict[str, Path], name: str) -> None:
    head = audio_files[name].read_bytes()[:HEAD_BYTES]
    found = sniff(head)
    assert found.kind == "audio"
    assert found.format == EXPECTED[name]


@pytest.mark.parametrize("fmt,expected", [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif")])
def test_image_formats_from_bytes(fmt: str, expected: str) -> None:
    found = sniff(image_bytes(fmt)[:HEAD_BYTES])
    assert (found.kind, found.format) == ("image", expected)


def test_mp3_without_id3_is_found_by_its_frames(audio_files: dict[str, Path]) -> None:
    data = audio_files["tone.mp3"].read_bytes()
    assert data.startswith(b"ID3")
    tag = 0
    for b in data[6:10]:  # the ID3 size is "syncsafe": 7 bits per byte
        tag = (tag << 7) | b
    frames = data[10 + tag :]
    assert frames[0] == 0xFF
    assert sniff(frames[:HEAD_BYTES]).format == "mp3"


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b"hello, this is a text file named song.mp3\n" * 50, "unrecognised"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", "not WAVE"),
        (b"FORM\x10\x00\x00\x00ILBM", "not AIFF"),
        (b"OggS\x00\x02" + b"\x00" * 100, "without Opus"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x05hello, no frames here at all", "no MPEG audio"),
        (b"\x00\x00\x00\x18ftypavc1\x00\x00\x00\x00avc1isom", None),  # generic isom: m4a candidate
        (b"\x00\x00\x00\x14ftypheic\x00\x00\x00\x00heic", "not audio"),
        (b"%PDF-1.7\n", "unrecognised"),
    ],
)
def test_bad_input_is_refused(data: bytes, message: str | None) -> None:
    if message is None:
        assert sniff(data).format == "m4a"  # probing decides whether audio is inside
        return
    with pytest.raises(SniffError, match=message):
        sniff(data)


def test_truncated_wav_is_caught_by_its_header(audio_files: dict[str, Path]) -> None:
    data = audio_files["tone.wav"].read_bytes()
    found = sniff(data[:HEAD_BYTES])
    check_declared_size(found, data[:HEAD_BYTES], len(data))  # whole: fine
    with pytest.raises(SniffError, match="truncated"):
        check_declared_size(found, data[:HEAD_BYTES], len(data) // 2)


def test_truncated_aiff_is_caught_by_its_header(audio_files: dict[str, Path]) -> None:
    data = audio_files["tone.aiff"].read_bytes()
    found = sniff(data[:HEAD_BYTES])
    with pytest.raises(SniffError, match="truncated"):
        check_declared_size(found, data[:HEAD_BYTES], len(data) - 1000)
