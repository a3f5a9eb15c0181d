"""Replay and start-up benchmark (a plain script, not collected by pytest).

    .venv/bin/python tests/benchmarks/bench_replay.py [--frames N] [--repeat R] [--smoke]

- replay: `plyr index --replay FILE --no-verify` run as a user runs it (a subprocess, into a
  fresh migrated database) over a network-shaped capture (~99.9% app.bsky.* commits, 0.1%
  fm.plyr.*; built and cached by bench_indexer.py), against a plain loop in this process that
  reads the same file, splits the frames and decodes header and body of each with libipld.
  The command's rate is its own: the frames and seconds of its "replayed" line, timed inside
  the command from reading the stored cursor to the last batch committed (its start-up, the
  database connection and the migration check are not in it). Runs alternate, best of R each, so both see the same load.
- start-up: best of N wall times of `python -m plyr --help`, `python -m plyr index --help`
  and `python -c pass` (the interpreter alone), each a fresh process.

Postgres: PLYR_TEST_DATABASE_URL or DATABASE_URL (a database is created and dropped), else an
embedded one. Captures are cached in $PLYR_BENCH_DIR (default /tmp/plyr-bench). `--smoke`: a
tiny capture in a scratch folder, one round: checks that the benchmark works.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import libipld

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_indexer import Shape, network_capture  # noqa: E402
from tests.support.bench_setup import ScratchDatabase, child_env, isolate, server_url  # noqa: E402

REPLAYED = re.compile(r"replayed .*: (\d+) frames in ([\d.]+)s")


def plain_loop(path: Path) -> float:
    """Frames/s of the baseline: read the file, split the frames, decode header and body."""
    decode = libipld.decode_dag_cbor_multi
    unpack = struct.unpack_from
    t0 = time.perf_counter()
    data = path.read_bytes()
    pos, n, count = 0, len(data), 0
    while pos + 4 <= n:
        (length,) = unpack("<I", data, pos)
        decode(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
        count += 1
    return count / (time.perf_counter() - t0)


def replay_command(path: Path, server: str) -> tuple[int, float, float]:
    """`plyr index --replay` in a subprocess: (frames, its own seconds, wall seconds)."""
    with ScratchDatabase(server) as url:
        t0 = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "plyr", "index", "--replay", str(path), "--no-verify"],
            env=child_env(DATABASE_URL=url), capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    found = REPLAYED.search(run.stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"plyr index --replay failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    return int(found[1]), float(found[2]), wall


def startup(args: list[str], rounds: int) -> float:
    """Best wall time of `python ARGS` (a fresh process each time)."""
    best = float("inf")
    env = child_env()
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000, help="frames in the network-shaped capture")
    parser.add_argument("--repeat", type=int, default=3, help="replay runs (and plain loops), best of")
    parser.add_argument("--startup-rounds", type=int, default=10, help="start-up runs, best of")
    parser.add_argument("--smoke", action="store_true", help="a tiny capture, one round: checks that it works")
    args = parser.parse_args()
    cache_dir = Path(os.environ.get("PLYR_BENCH_DIR", "/tmp/plyr-bench"))
    server = server_url()
    scratch = isolate()
    shape = Shape(cache_dir)
    if args.smoke:
        args.frames, args.repeat, args.startup_rounds = 500, 1, 2
        shape = Shape(scratch / "captures", repos=20, prefill=10, plyr_every=50)
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    path, _keys = network_capture(args.frames, shape)
    print(f"capture: {path.name}, {path.stat().st_size / 1e6:.1f} MB, one fm.plyr commit in {shape.plyr_every} frames")

    plain = command = 0.0
    wall = float("inf")
    frames = 0
    for _ in range(args.repeat):
        plain = max(plain, plain_loop(path))
        frames, seconds, elapsed = replay_command(path, server)
        command = max(command, frames / seconds)
        wall = min(wall, elapsed)
    print(f"plain loop (read + split + libipld decode):         {plain:>10,.0f} frames/s")
    print(f"plyr index --replay (its own timing):               {command:>10,.0f} frames/s  "
          f"({command / plain:.2f} of the plain loop; {frames} frames, command wall {wall:.2f}s)")  # fmt: skip

    bare = startup(["-c", "pass"], args.startup_rounds)
    helps = {
        "plyr --help": startup(["-m", "plyr", "--help"], args.startup_rounds),
        "plyr index --help": startup(["-m", "plyr", "index", "--help"], args.startup_rounds),
    }
    print(f"start-up, python -c pass:                           {bare:>10.3f} s")
    for name, seconds in helps.items():
        print(f"start-up, {name + ':':<42}{seconds:>10.3f} s  (+{seconds - bare:.3f} s over python)")


if __name__ == "__main__":
    main()
