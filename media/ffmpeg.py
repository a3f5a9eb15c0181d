"""Running ffmpeg: which binary, with local files only, under a wall-clock limit, reporting progress.

The binary is PLYR_FFMPEG when set, else the static build shipped by the `imageio-ffmpeg` wheel.
Every run passes `-protocol_whitelist file,pipe` so a crafted input (a playlist, a concat list)
cannot make ffmpeg open network URLs. A run that overstays its limit is killed, and so is one
whose caller is cancelled: no orphan ffmpeg outlives its job.

Nothing is read out of ffmpeg's free text: it logs at `error` level only (no input description,
so no tags an uploader wrote), and how far it got comes from the `-progress` key=value lines,
which carry numbers only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("plyr.media.ffmpeg")

SAFE_INPUT = ["-protocol_whitelist", "file,pipe"]

# Our sniffed format -> the ffmpeg demuxer to read it with. Naming the demuxer means ffmpeg
# never guesses one from the content: a file cannot turn into a playlist (HLS, concat) that
# points at other local files.
DEMUXERS = {
    "mp3": "mp3", "aac": "aac", "wav": "wav", "aiff": "aiff", "flac": "flac", "m4a": "mov",
    "ogg-opus": "ogg", "ogg-vorbis": "ogg", "ogg-flac": "ogg", "webm": "matroska",
    "matroska": "matroska", "webp": "webp_pipe",
}


def input_args(path: str, fmt: str | None) -> list[str]:
    """`-i path` for a local file, restricted to local protocols and (when known) one demuxer."""
    demuxer = DEMUXERS.get(fmt or "")
    return [*SAFE_INPUT, *(["-f", demuxer] if demuxer else []), "-i", path]


class FFmpegError(RuntimeError):
    """ffmpeg failed, hung, or could not be started; the message says which.

    `returncode` is ffmpeg's exit status when it ran and exited by itself (negative: the signal
    that killed it), else None."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


def ffmpeg_exe(configured: str | None = None) -> str:
    if configured:
        return configured
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])[:500]


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await proc.wait()


async def run_ffmpeg(
    exe: str,
    args: Sequence[str],
    *,
    timeout_s: float,
    on_progress: Callable[[float], Awaitable[None]] | None = None,
    total_s: float | None = None,
    check: bool = True,
    on_time: Callable[[float], None] | None = None,
) -> tuple[int, str]:
    """Run `exe args...`; return (exit code, stderr). `-progress pipe:1` lines feed `on_progress`
    (a fraction of `total_s`, at most twice a second) and `on_time` (every output time, seconds).

    Raises FFmpegError when it exits non-zero (with `check`), or is killed after `timeout_s`.
    """
    # `-loglevel error`: stderr holds ffmpeg's errors only, never the input's tags.
    cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise FFmpegError(f"cannot run ffmpeg ({exe}): {exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    stderr_chunks: list[bytes] = []

    async def read_stderr() -> None:
        assert proc.stderr is not None
        # Keep only the tail: a long run of warnings must not grow without bound.
        size = 0
        while chunk := await proc.stderr.read(65536):
            stderr_chunks.append(chunk)
            size += len(chunk)
            while size > 256 * 1024 and len(stderr_chunks) > 1:
                size -= len(stderr_chunks.pop(0))

    async def read_progress() -> None:
        assert proc.stdout is not None
        last_sent = 0.0
        while line := await proc.stdout.readline():
            key, _, value = line.decode(errors="replace").strip().partition("=")
            if key != "out_time_us":
                continue
            try:
                seconds = int(value) / 1e6
            except ValueError:
                continue  # "N/A" before the first packet
            if on_time is not None:
                on_time(seconds)
            if on_progress and total_s:
                fraction = min(1.0, max(0.0, seconds / total_s))
                now = time.monotonic()
                if now - last_sent >= 0.5:  # progress is a hint: at most two updates a second
                    last_sent = now
                    await on_progress(fraction)

    readers = asyncio.gather(read_stderr(), read_progress())
    try:
        await asyncio.wait_for(asyncio.shield(readers), timeout=timeout_s)
        await asyncio.wait_for(proc.wait(), timeout=max(1.0, timeout_s))
    except TimeoutError:
        await _kill(proc)
        readers.cancel()
        with contextlib.suppress(BaseException):
            await readers
        raise FFmpegError(f"ffmpeg took longer than {timeout_s:g} s and was stopped") from None
    except BaseException:
        await _kill(proc)
        readers.cancel()
        with contextlib.suppress(BaseException):
            await readers
        raise
    stderr = b"".join(stderr_chunks).decode(errors="replace")
    code = proc.returncode if proc.returncode is not None else -1
    if check and code != 0:
        raise FFmpegError(f"ffmpeg failed (exit {code}): {_last_lines(stderr)}", returncode=code)
    return code, stderr
