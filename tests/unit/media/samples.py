"""Real media files for the media tests, made by the real ffmpeg (imageio-ffmpeg) and Pillow."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import imageio_ffmpeg
from PIL import Image

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# name -> ffmpeg output arguments (the input is a stereo sine tone)
AUDIO = {
    "tone.wav": ["-c:a", "pcm_s16le"],
    "tone.aiff": ["-c:a", "pcm_s16be"],
    "tone.aifc": ["-c:a", "pcm_f32be", "-f", "aiff"],
    "tone.flac": ["-c:a", "flac"],
    "tone.mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "tone-alac.m4a": ["-c:a", "alac"],
    "tone-aac.m4a": ["-c:a", "aac", "-b:a", "96k"],
    "tone.opus": ["-c:a", "libopus", "-ar", "48000", "-f", "ogg"],
    "tone-vorbis.ogg": ["-c:a", "libvorbis"],
    "tone-flac.oga": ["-c:a", "flac", "-f", "ogg"],
    "tone.webm": ["-c:a", "libopus", "-ar", "48000", "-f", "webm"],
}


def make_audio(folder: Path, name: str, seconds: float = 3.0) -> Path:
    out = folder / name
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency=440:duration={seconds}:sample_rate=44100", "-ac", "2",
         *AUDIO[name], str(out)],
        check=True,
    )
    return out


def make_noise(out: Path, seconds: float, codec_args: list[str]) -> Path:
    """Stereo noise (does not compress away, unlike a tone) of `seconds`, 44.1 kHz."""
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"anoisesrc=d={seconds}:a=0.3:sample_rate=44100", "-ac", "2", *codec_args, str(out)],
        check=True,
    )
    return out


def make_all_audio(folder: Path, seconds: float = 3.0) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {name: make_audio(folder, name, seconds) for name in AUDIO}


def image_bytes(fmt: str, size: tuple[int, int] = (640, 480)) -> bytes:
    img = Image.new("RGB", size, (200, 40, 90))
    for x in range(0, size[0], 7):  # some detail, so encoders do real work
        img.putpixel((x, x % size[1]), (10, 250, 10))
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def png_bomb() -> bytes:
    """A small PNG whose header declares 30000x30000 pixels (900 megapixels)."""
    img = Image.new("1", (30000, 30000), 0)
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()
