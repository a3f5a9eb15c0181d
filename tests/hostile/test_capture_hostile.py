"""Issue #11, capture files: a corrupt length prefix lost everything after it, in quadratic time,
and the replay exited 0.

The reader buffered the rest of the file behind a bad length (re-copying the growing buffer on
every read), handed it on as one bad frame and reported success. Now a frame is bounded
(indexer.sources.MAX_CAPTURE_FRAME), the read is linear with bounded memory, and the replay stops
with the byte offset where the capture became unreadable and the number of bytes not read
(`plyr index --replay`: one error line, exit 1), after committing the frames before it.
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys
import time
import tracemalloc
from pathlib import Path

import asyncpg
import pytest

from indexer.sources import CaptureSource
from tests.support.frames import MiniRepo, capture_bytes, commit_frame, track_record, write_capture
from tests.support.rkeys import tid_key

ROOT = Path(__file__).resolve().parents[2]
CAPTURE_CORPUS = ROOT / "tests" / "fuzz" / "corpus" / "captures"
ALICE = "did:plc:alice234567abcdefghijklm"


def valid_frames(n: int, did: str = ALICE) -> list[bytes]:
    repo = MiniRepo(did)
    return [
        commit_frame(
            i + 1, repo.commit([("create", "fm.plyr.track", tid_key(f"t{i}"), track_record(f"T{i}"))])
        )
        for i in range(n)
    ]


def write_junk(path: Path, head: bytes, junk_mb: int) -> int:
    """`head`, then `junk_mb` MiB of random bytes; returns the file size."""
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        out.write(head)
        for _ in range(junk_mb):
            out.write(block)
    return len(head) + junk_mb * (1 << 20)


async def read_all(source: CaptureSource) -> tuple[list[bytes], BaseException | None]:
    out: list[bytes] = []
    try:
        async for batch in source.batches(lambda: None):
            out.extend(batch)
    except Exception as exc:  # noqa: BLE001 - the caller looks at what came out
        return out, exc
    return out, None


def unreadable_at(exc: BaseException | None) -> tuple[int, int]:
    """(offset, bytes not read) of a CaptureUnreadable."""
    from core.errors import PlyrError
    from indexer.sources import CaptureUnreadable

    assert isinstance(exc, CaptureUnreadable), f"expected CaptureUnreadable, got {exc!r:.300}"
    assert isinstance(exc, PlyrError)  # one line, exit 1 from the command
    assert "\n" not in str(exc)
    assert f"byte {exc.offset}" in str(exc), str(exc)
    return exc.offset, exc.unread


@pytest.mark.parametrize("length", [0xFFFFFFFF, 0x7FFFFFF0, "max+1"])
async def test_corrupt_length_prefix_with_a_big_tail_is_rejected_fast_in_bounded_memory(
    tmp_path: Path, length: int | str
) -> None:
    from indexer.sources import MAX_CAPTURE_FRAME

    good = valid_frames(3)
    head = capture_bytes(good)
    prefix = MAX_CAPTURE_FRAME + 1 if length == "max+1" else length
    size = write_junk(tmp_path / "corrupt.bin", head + struct.pack("<I", prefix), 64)
    tracemalloc.start()
    started = time.monotonic()
    try:
        frames, exc = await read_all(CaptureSource(tmp_path / "corrupt.bin"))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    assert frames == good
    offset, unread = unreadable_at(exc)
    assert offset == len(head) and unread == size - len(head)
    assert elapsed < 10, f"{elapsed:.1f}s to reject a 64 MB tail"
    assert peak < 24 << 20, f"peak {peak >> 20} MB to reject a 64 MB tail"


async def test_frames_up_to_the_bound_are_read_whole_in_linear_time(tmp_path: Path) -> None:
    from indexer.sources import CHUNK, MAX_CAPTURE_FRAME

    big = [b"a" * (CHUNK * 5 + 3), b"b" * 10, b"c" * MAX_CAPTURE_FRAME, b""]
    path = write_capture(tmp_path / "big.bin", big)
    started = time.monotonic()
    frames, exc = await read_all(CaptureSource(path))
    assert exc is None and frames == big
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 100])
@pytest.mark.parametrize("suffix", [".bin", ".bin.zst"])
async def test_a_truncated_final_frame_is_reported(tmp_path: Path, cut: int, suffix: str) -> None:
    good = valid_frames(3)
    last = b"z" * 200
    data = capture_bytes([*good, last])
    data = data[: len(data) - cut] if cut < 100 else data[: len(data) - 200 - 2]
    path = tmp_path / f"cut{suffix}"
    write_capture(path, [])  # (the right container for the suffix)
    if suffix.endswith(".zst"):
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    frames, exc = await read_all(CaptureSource(path))
    assert frames == good
    offset, unread = unreadable_at(exc)
    assert offset == len(capture_bytes(good)) and unread == len(data) - offset


async def test_zst_corrupt_length_prefix_is_reported(tmp_path: Path) -> None:
    import zstandard

    good = valid_frames(2)
    head = capture_bytes(good)
    tail = os.urandom(4 << 20)
    data = head + struct.pack("<I", 0xFFFFFFFE) + tail
    path = tmp_path / "corrupt.bin.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    frames, exc = await read_all(CaptureSource(path))
    assert frames == good
    assert unreadable_at(exc) == (len(head), len(data) - len(head))


async def test_a_corrupt_zst_stream_is_reported_with_its_offset(tmp_path: Path) -> None:
    import zstandard

    good = valid_frames(40)
    compressed = bytearray(zstandard.ZstdCompressor().compress(capture_bytes(good)))
    compressed[len(compressed) // 2 :] = b"\x00" * (len(compressed) - len(compressed) // 2)
    path = tmp_path / "broken.bin.zst"
    path.write_bytes(bytes(compressed))
    frames, exc = await read_all(CaptureSource(path))
    offset, _unread = unreadable_at(exc)
    assert frames == good[: len(frames)] and len(capture_bytes(frames)) == offset


def _reference_split(data: bytes) -> tuple[list[bytes], int]:
    """Whole frames up to the first one that is oversized or cut (a plain loop, for comparison)."""
    from indexer.sources import MAX_CAPTURE_FRAME

    out, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        if n > MAX_CAPTURE_FRAME or pos + 4 + n > len(data):
            break
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out, pos


def _expected(path: Path) -> tuple[list[bytes], int, int]:
    data = path.read_bytes()
    return (*_reference_split(data), len(data))


def capture_corpus() -> list[Path]:
    return sorted(CAPTURE_CORPUS.glob("*.bin"))


@pytest.mark.parametrize("path", capture_corpus(), ids=lambda p: p.name)
async def test_capture_corpus_is_read_up_to_the_damage_and_reported(path: Path) -> None:
    want, end, size = _expected(path)
    frames, exc = await read_all(CaptureSource(path))
    assert frames == want
    if end == size:
        assert exc is None
    else:
        assert unreadable_at(exc) == (end, size - end)


# ---- 2. `plyr index --replay` of a corrupt capture ------------------------------------------------


async def plyr(*args: str, env: dict[str, str]) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, err


def _env(database_url: str) -> dict[str, str]:
    # PLC on a dead loopback port: nothing may leave the machine.
    return {**os.environ, "DATABASE_URL": database_url, "PLYR_LOG_FORMAT": "json",
            "PLYR_PLC_URL": "http://127.0.0.1:9"}  # fmt: skip


async def test_cli_replay_of_a_corrupt_capture_commits_what_came_before_and_exits_1(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    good = valid_frames(30)
    head = capture_bytes(good)
    path = tmp_path / "corrupt.bin"
    size = write_junk(path, head + struct.pack("<I", 0xFFFFFFF0), 64)
    started = time.monotonic()
    code, err = await plyr("index", "--replay", str(path), "--no-verify", env=_env(database_url))
    elapsed = time.monotonic() - started
    stderr = err.decode(errors="replace")
    assert code == 1, stderr[-2000:]
    assert b"Traceback" not in err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-2000:]
    assert f"byte {len(head)}" in errors[0] and f"{size - len(head)} bytes" in errors[0]
    assert "replayed" not in stderr  # no success line
    # The frames before the damage are indexed and their cursor committed.
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 30
    assert await pool.fetchval("SELECT seq FROM cursors WHERE source = 'capture:corrupt.bin'") == 30
    assert elapsed < 60


async def test_cli_replay_of_a_truncated_capture_exits_1(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    good = valid_frames(5)
    data = capture_bytes(good)
    path = tmp_path / "cut.bin.zst"
    import zstandard

    path.write_bytes(zstandard.ZstdCompressor().compress(data[:-7]))
    code, err = await plyr("index", "--replay", str(path), "--no-verify", env=_env(database_url))
    stderr = err.decode(errors="replace")
    assert code == 1 and b"Traceback" not in err, stderr[-2000:]
    start = len(capture_bytes(good[:4]))
    assert f"byte {start}" in stderr and f"{len(data) - 7 - start} bytes" in stderr
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 4
    assert await pool.fetchval("SELECT seq FROM cursors") == 4


def test_capture_corpus_is_not_empty() -> None:
    assert capture_corpus(), f"no capture cases in {CAPTURE_CORPUS}"
