"""Duration and technical metadata of a media file, read from the container's own structures.

libavformat (through PyAV) opens the file and we read numbers and codec ids from its structs:
nothing is parsed out of text, so a tag an uploader wrote (a title reading "Duration:
99:59:59.00" or "Stream #0:1: Audio: flac") stays a tag. The probe runs in a child process
(`python -m media.probe FORMAT PATH`, JSON on stdout): a crafted file that crashes or hangs a
demuxer takes down the child, never the server, and the child is killed past its time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from media.ffmpeg import DEMUXERS

TAG_KEYS = ("title", "artist", "album", "album_artist", "date", "genre", "track")
_OUTPUT_LIMIT = 256 * 1024  # the child's JSON; more means something is wrong
_CODE_ROOT = str(Path(__file__).resolve().parent.parent)  # the child runs this same media/


class ProbeError(ValueError):
    """The file could not be read as media."""


@dataclass
class Probe:
    duration_s: float | None = None
    bit_rate: int | None = None          # bits per second, whole file
    codec: str | None = None             # of the first audio stream: mp3, aac, alac, flac, pcm_s16le, ...
    sample_rate: int | None = None
    channels: str | None = None          # mono, stereo, 5.1(side), ...
    has_cover: bool = False              # an attached picture stream
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_probe(path: str, fmt: str | None) -> Probe:
    """Open `path` with libavformat (the demuxer of sniffed format `fmt`) and describe it.

    Runs in the child process; raises whatever PyAV raises for an unreadable file.
    """
    import av

    probe = Probe()
    with av.open(
        path,
        format=DEMUXERS.get(fmt or ""),  # named demuxer: the content cannot pick a playlist one
        options={"protocol_whitelist": "file"},  # no network, no pipes, whatever the file says
        metadata_errors="replace",  # tags in a broken encoding are text, not a failure
    ) as container:
        if container.duration is not None and container.duration > 0:
            probe.duration_s = container.duration / av.time_base
        probe.bit_rate = int(container.bit_rate) or None
        for key, value in container.metadata.items():
            name = key.lower()
            if name in TAG_KEYS:
                probe.tags.setdefault(name, str(value).strip()[:500])
        for stream in container.streams:
            if stream.type == "video" and stream.disposition & av.stream.Disposition.attached_pic:
                probe.has_cover = True
            elif isinstance(stream, av.AudioStream) and probe.codec is None:
                ctx = stream.codec_context
                probe.codec = ctx.codec.canonical_name  # "mp3", not the decoder's "mp3float"
                probe.sample_rate = int(ctx.sample_rate) or None
                probe.channels = ctx.layout.name[:40] or None
                if probe.duration_s is None and stream.duration and stream.time_base:
                    probe.duration_s = float(stream.duration * stream.time_base)
    return probe


async def probe_file(path: Path, *, fmt: str | None = None, timeout_s: float = 60.0) -> Probe:
    """Probe `path` (read as sniffed format `fmt`); raise ProbeError when it cannot be read."""
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "media.probe", fmt or "-", str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,  # libav's log is free text: never read
            env=_child_env(),
        )
    except OSError as exc:
        raise ProbeError(f"cannot start the probe: {exc}") from exc
    assert proc.stdout is not None
    try:
        out = await asyncio.wait_for(proc.stdout.read(_OUTPUT_LIMIT), timeout_s)
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        raise ProbeError(f"reading the file took longer than {timeout_s:g} s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()
    try:
        answer = orjson.loads(out)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        raise ProbeError(f"the probe stopped without an answer (exit {proc.returncode})")
    if "error" in answer:
        raise ProbeError(str(answer["error"])[:300])
    return Probe(**answer["probe"])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_CODE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def _main(argv: list[str]) -> int:
    fmt, path = argv
    try:
        probe = read_probe(path, None if fmt == "-" else fmt)
    except Exception as exc:
        # PyAV's message ends with the path (a temp file name): say only what is wrong.
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        sys.stdout.buffer.write(orjson.dumps({"error": f"not a readable media file: {reason}"}))
        return 1
    sys.stdout.buffer.write(orjson.dumps({"probe": probe.to_json()}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
