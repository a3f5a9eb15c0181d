"""A long fuzz session of the frame decoder and the verifier (the bounded run is in
tests/unit/indexer/test_frames_fuzz.py).

    .venv/bin/python -m tests.fuzz.fuzz_frames --seconds 600 [--seed N] [--save]

Generates mutated frames (tests/fuzz/frames_corpus.py: bit flips, truncations, splices, random
bytes, huge lengths, wrong field types, tampered CARs), and mutated Jetstream JSON messages
(one input in five), and checks each with a fresh decoder and
with one long-lived decoder (state across frames: last_seq, watched revs). Failures are
grouped by the first line of their message; with --save one input per group is kept in
tests/fuzz/corpus/ (replayed by the unit tests from then on). Exit status 1 when anything
failed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import time
import traceback

from indexer.frames import FrameDecoder
from tests.fuzz.frames_corpus import (
    DID,
    check_decode_result,
    check_jetstream,
    check_verify,
    mutate,
    mutate_jetstream,
    save_case,
)


def _group(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0]
    if isinstance(exc, AssertionError):
        first = first.split(" is ")[0]  # "<field> is <type>: <value>": one group per field
    first = re.sub(r"b'[^']*'|'[^']*'|\d+", "_", first)[:80]
    return f"{type(exc).__name__}: {first}"


def _slug(group: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", group.lower()).strip("-")[:48]


def _record(
    failures: dict[str, tuple[int, bytes, str]], where: str, exc: BaseException, data: bytes
) -> None:
    group = f"{where}: {_group(exc)}"
    count, first, tb = failures.get(group, (0, data, traceback.format_exc()))
    failures[group] = (count + 1, first, tb)


async def session(seconds: float, seed: int, save: bool, verbose: bool) -> int:
    rnd = random.Random(seed)
    deadline = time.monotonic() + seconds
    long_lived = FrameDecoder(watched={DID: None})
    failures: dict[str, tuple[int, bytes, str]] = {}
    runs = 0
    while time.monotonic() < deadline:
        runs += 1
        if runs % 5 == 0:  # one input in five for the Jetstream decoder
            data = mutate_jetstream(rnd)
            try:
                check_jetstream(data)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                _record(failures, "jetstream", exc, data)
            continue
        data = mutate(rnd)
        for decoder in (FrameDecoder(watched={DID: None}), long_lived):
            # Three separate findings: the decoder raising, the verifier raising something else
            # than VerifyError on what the decoder returned, and a misshapen (untyped) event.
            try:
                ev = decoder.decode(data)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                _record(failures, "decode raised", exc, data)
                long_lived = FrameDecoder(watched={DID: None})
                break
            try:
                await check_verify(ev)
            except Exception as exc:  # noqa: BLE001
                _record(failures, "verify raised", exc, data)
            try:
                check_decode_result(ev, decoder)
            except AssertionError as exc:
                _record(failures, "untyped event", exc, data)
                if decoder is long_lived:  # do not let one poisoned state hide everything else
                    long_lived = FrameDecoder(watched={DID: None})
                break
    print(f"{runs} inputs in {seconds:.0f}s (seed {seed}); {len(failures)} failure groups")
    for group, (count, data, tb) in sorted(failures.items(), key=lambda kv: -kv[1][0]):
        line = f"  {count:6d}  {group}"
        if save:
            line += f"  -> {save_case(data, _slug(group)).name}"
        print(line)
        if verbose:
            print(tb)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--save", action="store_true", help="keep one input per failure group in the corpus"
    )
    parser.add_argument("--verbose", action="store_true", help="print a traceback per group")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    return asyncio.run(session(args.seconds, seed, args.save, args.verbose))


if __name__ == "__main__":
    sys.exit(main())
