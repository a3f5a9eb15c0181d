"""Fuzz the C CAR section index (protocol._car_index) with mutated repo CARs.

    .venv/bin/python tests/fuzz/fuzz_car_index.py [--seconds 60] [--seed N]

Each case is a real repo CAR (tests/support/repo_builder.py) with a few mutations (bytes
flipped, runs inserted or deleted, a cut), fed whole and in random chunks. Checked:
- the index raises nothing but ValueError (feed/finish) and never crashes the process;
- when it accepts a CAR, the plain reference framer accepts it too and finds the same blocks at
  the same offsets, and every offset it hands out lies inside the data.

Under AddressSanitizer (how it was run, see docs/BENCHMARKS.md "Backfill"): build the extension
with `-fsanitize=address,undefined`, then run this script with
`PYTHONMALLOC=malloc LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0`
(PYTHONMALLOC=malloc gives every chunk its own allocation, so an overread past it is caught).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from indexer.backfill.car_store import parse_car_header  # noqa: E402
from protocol._car_index import SectionIndex  # noqa: E402
from tests.support.repo_builder import mixed_repo  # noqa: E402
from tests.unit.backfill.test_car_index_native import reference_sections  # noqa: E402

MAX_SECTION = 4 * 1024 * 1024


def mutate(data: bytes, rng: random.Random, start: int) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if len(out) <= start + 1:
            break
        at = rng.randrange(start, len(out))
        kind = rng.randrange(5)
        if kind == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[at] = rng.choice([0x00, 0x01, 0x12, 0x20, 0x7F, 0x80, 0xFF])
        elif kind == 2:
            del out[at : at + rng.randint(1, 40)]
        elif kind == 3:
            out[at:at] = rng.randbytes(rng.randint(1, 40))
        else:
            del out[at:]
    return bytes(out)


def run_case(data: bytes, start: int, rng: random.Random) -> str:
    index = SectionIndex(start, MAX_SECTION)
    try:
        pos = start
        while pos < len(data):
            step = rng.choice([1, 2, 3, 37, 100, 4096, len(data)])
            index.feed(data[pos : pos + step])  # a copy: an overread past it is its own bug
            pos += step
        index.finish()
    except ValueError:
        return "refused"
    try:
        expected = reference_sections(data, start)
    except (IndexError, ValueError) as exc:
        raise AssertionError(f"the C index accepted a CAR the reference refuses: {exc}") from exc
    assert index.sections == len(expected), (index.sections, len(expected))
    for cid, offset, length in expected:
        found = index.find(cid)
        assert (offset, length) in found, (cid.hex(), offset, length, found)
        assert all(o + n <= len(data) for o, n in found)
    return "accepted"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    cars = [mixed_repo("did:plc:fuzzfuzzfuzzfuzzfuzzfuzz", n, plyr_every=5).car() for n in (3, 40)]
    starts = [parse_car_header(c)[1] for c in cars]  # type: ignore[index]
    outcomes = {"refused": 0, "accepted": 0}
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        i = rng.randrange(len(cars))
        outcomes[run_case(mutate(cars[i], rng, starts[i]), starts[i], rng)] += 1
    print(f"{sum(outcomes.values())} cases: {outcomes} (no crash, no disagreement)")


if __name__ == "__main__":
    main()
