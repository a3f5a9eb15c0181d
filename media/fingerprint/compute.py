"""Chromaprint fingerprints of whole files, computed by the bundled ffmpeg's `chromaprint` muxer.

    ffmpeg -threads 1 -protocol_whitelist file,pipe -f <sniffed demuxer> -i FILE -map 0:a:0
           -t 28800 -ac 1 -f chromaprint -fp_format raw -algorithm 1 pipe:1

The muxer feeds every decoded sample to libchromaprint (the whole file: there is no 120-second
limit as in `fpcalc`) and writes the raw sub-fingerprints, little-endian uint32, when the input
ends. We read that pipe in chunks up to a bound derived from the longest audio we fingerprint
(`MAX_AUDIO_S`, also passed as `-t`), under a wall-clock limit scaled by the probed duration,
and kill ffmpeg on overrun or cancellation.

Time base (measured, tests/unit/media/test_fingerprint_compute.py): algorithm 1 (TEST2) resamples
to 11025 Hz mono and hops 1365 samples (4096-sample frames, overlap 4096 - 4096/3), so
sub-fingerprint i starts at i * 0.123810 s and depends on the next 20 frames (4096 + 19 * 1365
samples = 2.724 s of audio): a file of L seconds gives floor((11025 L - 4096) / 1365) + 1 - 19
values (exact for 5, 10, 60, 123.4 and 600 s).

Speed variants (`fingerprint_file(path, speeds=QUERY_SPEEDS)`): the same run also fingerprints
the audio resampled as if played `speed` times as fast, pitch included (`aresample` to
11025 / speed Hz, relabelled 11025 Hz), one more `chromaprint` output each, written to a pipe of
its own (fd 3 and up); the file is decoded once. A copy sped up by 2 % with its pitch (a plain
resample) moves in-tune notes across Chromaprint's chroma bin edges, so its values differ from
the original's; its variant at 0.98 has them back in place (measured: bit error rate 0.03).
Only queries use variants; what is stored is the plain fingerprint.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import PlyrError
from media.ffmpeg import ffmpeg_exe, input_args
from media.probe import ProbeError, probe_file
from media.sniff import HEAD_BYTES, SniffError, sniff

ALGORITHM = 1  # CHROMAPRINT_ALGORITHM_TEST2: chromaprint's (and AcoustID's) default
ENGINE = f"chromaprint-alg{ALGORITHM}-ffmpeg-mono"  # values are comparable only within one engine
SAMPLE_RATE = 11025
HOP_SAMPLES = 1365
FRAME_S = HOP_SAMPLES / SAMPLE_RATE  # 0.1238 s between consecutive sub-fingerprints
ITEM_SPAN_S = (4096 + 19 * HOP_SAMPLES) / SAMPLE_RATE  # audio one sub-fingerprint depends on

MAX_AUDIO_S = 8 * 3600.0  # longer audio is fingerprinted up to here (a very long DJ set)
MAX_VALUES = int(MAX_AUDIO_S / FRAME_S) + 64
PROBE_TIMEOUT_S = 60.0
BASE_TIMEOUT_S = 60.0  # plus the audio's duration / MIN_SPEED
MIN_SPEED = 10.0  # slower than 10x real time means something is wrong (typical: 300-800x)
_CHUNK = 64 * 1024
# Speeds whose variants a scan matches too: a plain resample within 0.15 % of one of them is
# found (measured, docs/BENCHMARKS.md); between them in-tune music is not.
QUERY_SPEEDS: tuple[float, ...] = (0.98, 0.99, 1.01, 1.02)


class FingerprintError(PlyrError):
    """The file cannot be fingerprinted: missing, not audio, unreadable, or ffmpeg failed.

    `returncode` is ffmpeg's exit status when it ran and failed (negative: a signal), else None."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


@dataclass(frozen=True)
class Variant:
    """The fingerprint of the audio played `speed` times as fast with its pitch (a resample):
    its value i starts at i * FRAME_S * speed seconds of the original audio."""

    speed: float
    values: array[int] = field(hash=False)


@dataclass(frozen=True)
class Fingerprint:
    """Chromaprint sub-fingerprints (uint32, one every FRAME_S seconds) of one audio file.

    `duration_s` is the audio's length (from the fingerprint's own length when it has values,
    else the container's); `engine` names how the values were made: only fingerprints of the
    same engine are compared. Audio shorter than ITEM_SPAN_S has no values and matches nothing."""

    values: array[int] = field(hash=False)  # typecode "I"
    duration_s: float
    engine: str = ENGINE
    variants: tuple[Variant, ...] = ()  # speed variants, for matching only (never stored)

    def to_bytes(self) -> bytes:
        return values_to_bytes(self.values)


def values_to_bytes(values: array[int]) -> bytes:
    """Little-endian uint32s, whatever the machine's byte order."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("I", values)
    swapped.byteswap()
    return swapped.tobytes()


def values_from_bytes(data: bytes) -> array[int]:
    values = array("I")
    values.frombytes(data[: len(data) - len(data) % 4])
    if sys.byteorder != "little":
        values.byteswap()
    return values


def implied_duration_s(count: int) -> float:
    """The length of audio that gives `count` sub-fingerprints (within one hop)."""
    return (count - 1) * FRAME_S + ITEM_SPAN_S if count > 0 else 0.0


def chromaprint_args(path: Path, fmt: str | None) -> list[str]:
    """ffmpeg's arguments (after the binary and its logging flags) for the raw fingerprint."""
    return [
        "-threads", "1", *input_args(str(path), fmt), "-map", "0:a:0", "-t", f"{MAX_AUDIO_S:g}",
        "-vn", "-sn", "-dn", "-ac", "1",
        "-f", "chromaprint", "-fp_format", "raw", "-algorithm", str(ALGORITHM), "pipe:1",
    ]  # fmt: skip


def resample_hz(speed: float) -> int:
    """The rate the audio is resampled to for the variant at `speed` (then read as 11025 Hz)."""
    return round(SAMPLE_RATE / speed)


def variant_speed(speed: float) -> float:
    """The speed the variant really has (the resampling rate is a whole number of Hz)."""
    return SAMPLE_RATE / resample_hz(speed)


def chromaprint_speed_args(path: Path, fmt: str | None, speeds: Sequence[float], fds: Sequence[int]) -> list[str]:
    """ffmpeg's arguments for the plain fingerprint on pipe:1 and one variant per speed on the
    pipes `fds`: one decode, downmixed once (`aformat` mono: the same samples as `-ac 1`), split;
    the variants' branch brought down to 11025 Hz once (Chromaprint reads nothing above 3.5 kHz),
    then each resampled from there (cheap at that rate). Frames of 16384 samples (`asetnsamples`,
    the last one not padded: the values do not change) keep ffmpeg's per-frame cost between its
    threads down: with the decoder's 1152-sample frames the four variants cost 2.5x the plain
    run's CPU, with these a third of it (the 90-minute MP3 mix: 17.7 s against 13.5 s)."""
    n = len(speeds)
    graph = f"[0:a:0]aformat=channel_layouts=mono,asetnsamples=n=16384:p=0,asplit=2[p][x];[x]aresample={SAMPLE_RATE},asplit={n}"
    graph += "".join(f"[s{i}]" for i in range(n))
    graph += "".join(f";[s{i}]aresample={resample_hz(s)},asetrate={SAMPLE_RATE}[v{i}]" for i, s in enumerate(speeds))
    out = ["-t", f"{MAX_AUDIO_S:g}", "-f", "chromaprint", "-fp_format", "raw", "-algorithm", str(ALGORITHM)]
    args = ["-threads", "1", "-filter_complex_threads", "1", *input_args(str(path), fmt),
            "-filter_complex", graph, "-map", "[p]", *out, "pipe:1"]  # fmt: skip
    for i, fd in enumerate(fds):
        args += ["-map", f"[v{i}]", *out, f"pipe:{fd}"]
    return args


def _read_head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(HEAD_BYTES)


async def _audio_format(path: Path) -> str:
    """The sniffed audio format of `path` (which names the demuxer ffmpeg may use)."""
    try:
        head = await asyncio.to_thread(_read_head, path)
    except FileNotFoundError:
        raise FingerprintError(f"no such file: {path.name}") from None
    except IsADirectoryError:
        raise FingerprintError(f"not a file: {path.name}") from None
    except OSError as exc:
        raise FingerprintError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    try:
        sniffed = sniff(head)
    except SniffError as exc:
        raise FingerprintError(f"not an audio file: {exc}") from None
    if sniffed.kind != "audio":
        raise FingerprintError(f"not an audio file ({sniffed.format})")
    return sniffed.format


async def fingerprint_file(path: Path, *, ffmpeg: str | None = None, speeds: Sequence[float] = ()) -> Fingerprint:
    """The Chromaprint fingerprint of the whole of `path` (up to MAX_AUDIO_S), with a variant
    per speed in `speeds` (see the module doc; a query's: QUERY_SPEEDS).

    Raises FingerprintError when the file is missing, is not audio (sniffed from its bytes,
    then probed), or ffmpeg fails, overstays its limit or writes more than the bound."""
    path = Path(path)
    fmt = await _audio_format(path)
    try:
        probe = await probe_file(path, fmt=fmt, timeout_s=PROBE_TIMEOUT_S)
    except ProbeError as exc:
        raise FingerprintError(f"the {fmt} file cannot be read: {exc}") from None
    if probe.codec is None:
        raise FingerprintError(f"the {fmt} file holds no audio stream")
    if not probe.duration_s or probe.duration_s <= 0:
        raise FingerprintError(f"the {fmt} file has no duration (empty or truncated)")
    duration = min(probe.duration_s, MAX_AUDIO_S)
    timeout_s = BASE_TIMEOUT_S + duration / MIN_SPEED
    exe = ffmpeg_exe(ffmpeg)
    if speeds:
        outputs = await run_chromaprint_pipes(
            exe, lambda fds: chromaprint_speed_args(path, fmt, speeds, fds), len(speeds), timeout_s=timeout_s
        )
    else:
        outputs = [await run_chromaprint(exe, chromaprint_args(path, fmt), timeout_s=timeout_s)]
    values = values_from_bytes(outputs[0])
    if not values and duration > ITEM_SPAN_S + 1.0:
        # The header promised audio that did not decode (damaged data after a valid start): an
        # empty fingerprint would match nothing and pass for a clean scan.
        raise FingerprintError(
            f"the {fmt} file decoded to no audio although it claims {duration:.1f} s (damaged data)"
        )
    variants = tuple(
        Variant(variant_speed(speed), values_from_bytes(data)) for speed, data in zip(speeds, outputs[1:], strict=True)
    )
    return Fingerprint(values, implied_duration_s(len(values)) if values else duration, ENGINE, variants)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await proc.wait()


def _tail(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-3:])[:400]


async def run_chromaprint(
    exe: str, args: list[str], *, timeout_s: float, max_bytes: int = MAX_VALUES * 4
) -> bytes:
    """Run ffmpeg and return what it writes to stdout (at most `max_bytes`).

    Raises FingerprintError when ffmpeg cannot start, exits non-zero, writes more than
    `max_bytes` or runs past `timeout_s`; ffmpeg is killed on every way out but success."""
    return (await run_chromaprint_pipes(exe, lambda _fds: args, 0, timeout_s=timeout_s, max_bytes=max_bytes))[0]


async def _pipe_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


async def run_chromaprint_pipes(
    exe: str,
    make_args: Callable[[list[int]], list[str]],
    extra: int,
    *,
    timeout_s: float,
    max_bytes: int = MAX_VALUES * 4,
) -> list[bytes]:
    """Run ffmpeg with `extra` more output pipes (their fds handed to `make_args`) and return
    what it writes to stdout and to each of them (at most `max_bytes` each); errors as
    run_chromaprint's."""
    pipes = [os.pipe() for _ in range(extra)]
    cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", *make_args([w for _, w in pipes])]
    transports: list[asyncio.BaseTransport] = []
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=[w for _, w in pipes],
            )
        except OSError as exc:
            raise FingerprintError(f"cannot run ffmpeg ({exe}): {exc}") from exc
        finally:
            for _, w in pipes:
                os.close(w)  # the child has its copies: EOF comes when it exits
        readers: list[asyncio.StreamReader] = []
        for i, (r, _) in enumerate(pipes):
            reader, transport = await _pipe_reader(r)
            pipes[i] = (-1, -1)  # the transport owns it now
            readers.append(reader)
            transports.append(transport)
        return await _collect(proc, readers, timeout_s=timeout_s, max_bytes=max_bytes)
    finally:
        for transport in transports:
            transport.close()
        for r, _ in pipes:
            if r >= 0:
                os.close(r)


async def _collect(
    proc: asyncio.subprocess.Process, extra: list[asyncio.StreamReader], *, timeout_s: float, max_bytes: int
) -> list[bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    streams = [proc.stdout, *extra]
    outs = [bytearray() for _ in streams]
    err = bytearray()
    too_much = False

    async def read_out(stream: asyncio.StreamReader, out: bytearray) -> None:
        nonlocal too_much
        while chunk := await stream.read(_CHUNK):
            out.extend(chunk)
            if len(out) > max_bytes:
                too_much = True
                await _kill(proc)  # the pipes close: the other readers end too
                return

    async def read_err() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(_CHUNK):
            err.extend(chunk)
            del err[: max(0, len(err) - 16384)]  # the tail is enough to say what went wrong

    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(read_out(st, o) for st, o in zip(streams, outs, strict=True)), read_err())
            code = await proc.wait()
    except TimeoutError:
        await _kill(proc)
        raise FingerprintError(f"ffmpeg took longer than {timeout_s:.0f} s and was stopped") from None
    finally:
        await _kill(proc)  # a no-op once it exited; otherwise (error, cancellation) no orphan
    if too_much:
        raise FingerprintError(f"ffmpeg wrote more than {max_bytes} bytes of fingerprint")
    if code != 0:
        raise FingerprintError(f"ffmpeg failed (exit {code}): {_tail(bytes(err))}", returncode=code)
    return [bytes(o) for o in outs]
