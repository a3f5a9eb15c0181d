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

REPLAYED = re.compile(r"replayed .*: (\d+) frames in ([\d.]+)s .*; ([\d.]+)s of CPU")


def plain_loop(path: Path) -> tuple[float, float]:
    """The baseline: read the file (1 MiB at a time), split the frames, decode header and body
    of each. (frames per wall second, frames per CPU second)."""
    decode = libipld.decode_dag_cbor_multi
    unpack = struct.unpack_from
    t0, c0 = time.perf_counter(), time.process_time()
    count, rest = 0, b""
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            buf = rest + chunk if rest else chunk
            pos, n = 0, len(buf)
            while pos + 4 <= n:
                (length,) = unpack("<I", buf, pos)
                end = pos + 4 + length
                if end > n:
                    break
                decode(buf[pos + 4 : end])
                pos = end
                count += 1
            rest = buf[pos:]
    return count / (time.perf_counter() - t0), count / (time.process_time() - c0)


def command_env(cache_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of the timed commands: bytecode cached as an installed package has it
    (in a folder of the benchmark's own, so neither the project nor the venv is written to),
    even where the shell says PYTHONDONTWRITEBYTECODE."""
    env = child_env(PYTHONPYCACHEPREFIX=str(cache_dir / "pycache"), **settings)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def replay_command(path: Path, server: str, cache_dir: Path) -> tuple[int, float, float, float, float]:
    """`plyr index --replay` in a subprocess: (frames, its own seconds and CPU seconds, wall
    seconds of the whole command, seconds to its first line of output)."""
    with ScratchDatabase(server) as url:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "plyr", "index", "--replay", str(path), "--no-verify"],
            env=command_env(cache_dir, DATABASE_URL=url), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        first_line = proc.stdout.readline()
        first = time.perf_counter() - t0
        output = first_line + proc.stdout.read()
        returncode = proc.wait()
        wall = time.perf_counter() - t0
    found = REPLAYED.search(output)
    if returncode != 0 or found is None:
        raise SystemExit(f"plyr index --replay failed ({returncode}):\n{output}")
    return int(found[1]), float(found[2]), float(found[3]), wall, first


def startup(args: list[str], rounds: int, cache_dir: Path) -> float:
    """Best wall time of `python ARGS` (a fresh process each time, after one to write the
    bytecode cache)."""
    best = float("inf")
    env = command_env(cache_dir)
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, check=True)
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

    plain = plain_cpu = command = command_cpu = 0.0
    wall = first = float("inf")
    frames = 0
    for _ in range(args.repeat):
        rate, rate_cpu = plain_loop(path)
        plain, plain_cpu = max(plain, rate), max(plain_cpu, rate_cpu)
        frames, seconds, cpu, elapsed, first_line = replay_command(path, server, shape.cache_dir)
        first = min(first, first_line)
        command, command_cpu = max(command, frames / seconds), max(command_cpu, frames / cpu)
        wall = min(wall, elapsed)
    print(f"plain loop (read + split + libipld decode):         {plain:>10,.0f} frames/s  "
          f"({plain_cpu:,.0f} per CPU second)")  # fmt: skip
    print(f"plyr index --replay (its own timing):               {command:>10,.0f} frames/s  "
          f"({command / plain:.2f} of the plain loop; {frames} frames, command wall {wall:.2f}s)")  # fmt: skip
    print(f"  per CPU second (a busy machine's fairer ratio):   {command_cpu:>10,.0f} frames/s  "
          f"({command_cpu / plain_cpu:.2f} of the plain loop's)")  # fmt: skip

    bare = startup(["-c", "pass"], args.startup_rounds, shape.cache_dir)
    helps = {
        "plyr --help": startup(["-m", "plyr", "--help"], args.startup_rounds, shape.cache_dir),
        "plyr index --help": startup(["-m", "plyr", "index", "--help"], args.startup_rounds, shape.cache_dir),
    }
    print(f"start-up, python -c pass:                           {bare:>10.3f} s")
    for name, seconds in helps.items():
        print(f"start-up, {name + ':':<42}{seconds:>10.3f} s  (+{seconds - bare:.3f} s over python)")
    label = "plyr index --replay, to its first line:"
    print(f"start-up, {label:<42}{first:>10.3f} s  (best of {args.repeat}: runtime, database, migrations)")


if __name__ == "__main__":
    main()
