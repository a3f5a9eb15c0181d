"""The streaming rendition of an audio file: MP3 320 kbps CBR, 44.1 kHz, with ID3 tags.

Lossless masters (WAV, AIFF, FLAC, ALAC) and formats browsers do not all play (Vorbis, WebM,
Matroska, Ogg FLAC) get one; MP3, AAC and Ogg/Opus stream as uploaded. The original always
stays as the master. ffmpeg reads local files only, reports progress on a pipe, and is killed
past the job's wall-clock limit; the output goes to a temporary file that is stored only when
it is complete and plausibly whole (its length matches the master's).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from media.ffmpeg import FFmpegError, input_args, run_ffmpeg
from media.probe import ProbeError, probe_file

log = logging.getLogger("plyr.media.transcode")

# (sniffed format, probed codec) pairs that browsers play as they are.
_PASSTHROUGH_FORMATS = {"mp3", "aac", "ogg-opus"}
_PASSTHROUGH_M4A_CODECS = {"aac"}
LOSSLESS_CODECS = {"flac", "alac"}

STREAM_BITRATE = "320k"
STREAM_RATE = 44100


def needs_transcode(fmt: str, codec: str | None) -> bool:
    """True when the upload needs an MP3 rendition to play everywhere."""
    if fmt in _PASSTHROUGH_FORMATS:
        return False
    if fmt == "m4a":
        return codec not in _PASSTHROUGH_M4A_CODECS  # ALAC (lossless) and anything odd
    return True  # wav, aiff, flac, ogg-vorbis, ogg-flac, webm, matroska


def is_lossless(fmt: str, codec: str | None) -> bool:
    return fmt in ("wav", "aiff", "flac", "ogg-flac") or (codec or "") in LOSSLESS_CODECS or (
        codec or ""
    ).startswith("pcm_")


def mp3_command(
    source: Path,
    output: Path,
    *,
    title: str | None = None,
    artist: str | None = None,
    cover: Path | None = None,
    progress: bool = True,
    source_format: str | None = None,
) -> list[str]:
    """The ffmpeg arguments (after the binary) that make the streaming rendition."""
    args = input_args(str(source), source_format)
    if cover is not None:
        args += input_args(str(cover), "webp")  # our own display rendition: always WebP
    args += ["-map", "0:a:0"]
    if cover is not None:
        # The cover as an ID3 APIC frame: one JPEG still, marked as the attached picture.
        args += ["-map", "1:v:0", "-c:v", "mjpeg", "-q:v", "3",
                 "-disposition:v:0", "attached_pic",
                 "-metadata:s:v", "title=Album cover", "-metadata:s:v", "comment=Cover (front)"]
    # Tags come only from what we were told: the master's own tags may be stale or hostile.
    args += ["-map_metadata", "-1"]
    if title:
        args += ["-metadata", f"title={title}"]
    if artist:
        args += ["-metadata", f"artist={artist}"]
    args += [
        "-c:a", "libmp3lame", "-b:a", STREAM_BITRATE, "-ar", str(STREAM_RATE),
        "-id3v2_version", "3", "-f", "mp3",
    ]
    if progress:
        args += ["-progress", "pipe:1", "-nostats"]
    args += ["-y", str(output)]
    return args


async def transcode_to_mp3(
    exe: str,
    source: Path,
    output: Path,
    *,
    duration_s: float | None,
    timeout_s: float,
    title: str | None = None,
    artist: str | None = None,
    cover: Path | None = None,
    on_progress: Callable[[float], Awaitable[None]] | None = None,
    source_format: str | None = None,
) -> float | None:
    """Write the MP3 rendition of `source` to `output`; return the encoded duration in seconds.

    Raises FFmpegError on failure, on timeout, and when the output is much shorter than the
    master claims to be (a truncated or corrupt master decodes only partly).
    """
    args = mp3_command(
        source, output, title=title, artist=artist, cover=cover, source_format=source_format
    )
    encoded: list[float] = []

    async def progress(fraction: float) -> None:
        encoded.append(fraction)
        if on_progress is not None:
            await on_progress(fraction)

    await run_ffmpeg(
        exe, args, timeout_s=timeout_s, on_progress=progress, total_s=duration_s or None
    )
    # Measure what was written (the Xing/Info frame gives the exact length) rather than trust
    # ffmpeg's report, which counts the cover's video frame too.
    try:
        out_time = (await probe_file(output, fmt="mp3")).duration_s
    except ProbeError as exc:
        raise FFmpegError(f"ffmpeg wrote no readable MP3: {exc}") from None
    _check_length(out_time, duration_s)
    return out_time


async def decode_check(
    exe: str,
    source: Path,
    *,
    fmt: str | None,
    duration_s: float | None,
    timeout_s: float,
    on_progress: Callable[[float], Awaitable[None]] | None = None,
) -> float | None:
    """Decode the first audio stream to nothing; return the decoded length in seconds.

    Raises FFmpegError when decoding fails or stops well short of the declared duration.
    """
    args = [*input_args(str(source), fmt), "-map", "0:a:0", "-f", "null", "-progress", "pipe:1", "-nostats", "-"]
    # The decoded length is the last output time of the progress lines (numbers only), not a
    # `time=` found in ffmpeg's log, which a tag could spell out.
    latest: list[float] = []

    def seen(seconds: float) -> None:
        latest[:] = [seconds]

    await run_ffmpeg(
        exe, args, timeout_s=timeout_s, on_progress=on_progress, total_s=duration_s or None,
        on_time=seen,
    )
    decoded = latest[0] if latest else None
    _check_length(decoded, duration_s)
    return decoded


def _check_length(decoded: float | None, declared: float | None) -> None:
    if declared and decoded is not None and decoded < declared * 0.98 - 0.5:
        raise FFmpegError(
            f"the audio decodes to {decoded:.1f} s of the {declared:.1f} s its header declares: "
            "the file is truncated or corrupt"
        )
