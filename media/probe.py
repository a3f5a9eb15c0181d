"""Duration and technical metadata of a media file, read by `ffmpeg -i` (no ffprobe in the wheel).

`ffmpeg -i FILE` with no output prints the input's description and exits 1; the description is
stable enough to parse: the Duration line, one line per stream, and the metadata blocks.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from media.ffmpeg import FFmpegError, input_args, run_ffmpeg

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_BITRATE = re.compile(r"bitrate: (\d+) kb/s")
_STREAM = re.compile(r"Stream #\d+:\d+[^:]*: (Audio|Video|Data|Subtitle): (.*)")
_META = re.compile(r"^\s{4,}(\w[\w ]*?)\s*: (.*)$")


class ProbeError(ValueError):
    """ffmpeg could not read the file as media."""


@dataclass
class Probe:
    duration_s: float | None = None
    bit_rate: int | None = None          # bits per second, whole file
    codec: str | None = None             # of the first audio stream: mp3, aac, alac, flac, pcm_s16le, ...
    sample_rate: int | None = None
    channels: str | None = None          # mono, stereo, 5.1, ...
    has_cover: bool = False              # an attached picture stream
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_probe(text: str) -> Probe:
    probe = Probe()
    if match := _DURATION.search(text):
        h, m, s = match.groups()
        probe.duration_s = int(h) * 3600 + int(m) * 60 + float(s)
    if match := _BITRATE.search(text):
        probe.bit_rate = int(match.group(1)) * 1000
    in_input_meta = False
    for line in text.splitlines():
        if line.startswith("Input #"):
            in_input_meta = False
        elif line.strip() == "Metadata:" and line.startswith("  Metadata"):
            in_input_meta = True  # the container's metadata (2-space indent), not a stream's
            continue
        elif line.lstrip().startswith(("Duration:", "Stream #", "Chapter")):
            in_input_meta = False
        if in_input_meta and (meta := _META.match(line)):
            key = meta.group(1).strip().lower()
            if key in ("title", "artist", "album", "album_artist", "date", "genre", "track"):
                probe.tags.setdefault(key, meta.group(2).strip()[:500])
        if stream := _STREAM.search(line):
            kind, desc = stream.groups()
            if kind == "Video" and "attached pic" in desc:
                probe.has_cover = True
            if kind == "Audio" and probe.codec is None:
                parts = [p.strip() for p in desc.split(",")]
                probe.codec = parts[0].split(" ")[0]
                for part in parts[1:]:
                    if part.endswith(" Hz"):
                        probe.sample_rate = int(part[:-3])
                    elif part in ("mono", "stereo") or re.fullmatch(r"\d\.\d(\(\w+\))?|\d+ channels", part):
                        probe.channels = part
    return probe


async def probe_file(exe: str, path: Path, *, fmt: str | None = None, timeout_s: float = 60.0) -> Probe:
    """Probe `path` (read as sniffed format `fmt`); raise ProbeError when ffmpeg cannot read it."""
    try:
        _, text = await run_ffmpeg(exe, input_args(str(path), fmt), timeout_s=timeout_s, check=False)
    except FFmpegError as exc:
        raise ProbeError(str(exc)) from None
    # Exit 1 with "At least one output file must be specified" is the normal outcome; anything
    # else means ffmpeg could not open the input.
    if "Input #0" not in text:
        raise ProbeError(f"not a readable media file: {_last_error(text)}")
    return parse_probe(text)


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "ffmpeg printed nothing"
