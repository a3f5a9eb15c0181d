"""Every benchmark script runs in `--smoke` mode (tiny data, seconds) and prints its figures, so
a benchmark that stopped working fails here, not on the day someone wants to measure.

Each script sets up its own database (on the server given here as PLYR_TEST_DATABASE_URL) and
settings. The AppView benchmarks use wrk when it is installed and an aiohttp client loop
otherwise; a run that must cover everything (PLYR_TESTS_REQUIRE_ALL=1, CI) requires wrk, which
`.ci/run` installs. bench_backfill_pds needs the npm PDS harness of tests/e2e.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import skip_unless_required
from tests.e2e.pds_network import FIRST_TEST_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "tests" / "benchmarks"
EXIT_UNAVAILABLE = 3  # bench_backfill_pds: the PDS harness cannot be installed (no npm)
NUMBER = r"[\d,.]+"

# script -> lines its output must contain (its figures)
EXPECTED: dict[str, list[str]] = {
    "bench_indexer.py": [
        rf"indexer decode\+filter from the capture file: +{NUMBER} frames/s",
        rf"websocket indexer consumer .*: +{NUMBER} frames/s",
        rf"end to end into Postgres .*: +{NUMBER} records/s",
    ],
    "bench_replay.py": [
        rf"plain loop \(read \+ split \+ libipld decode\): +{NUMBER} frames/s",
        rf"plyr index --replay \(its own timing\): +{NUMBER} frames/s +\({NUMBER} of the plain loop",
        rf"start-up, plyr --help: +{NUMBER} s",
        rf"start-up, plyr index --help: +{NUMBER} s",
        rf"start-up, plyr index --replay, to its first line: +{NUMBER} s",
    ],
    "bench_network_plays.py": [
        rf"network plays \(batches of 100\) +{NUMBER} records/s",
        rf"tracks again: their plays re-decided +{NUMBER} records/s",
        r"plays by match: metadata 200, url 100, none 100",
        rf"track stats read \(plays and network plays\): {NUMBER} ms",
    ],
    "bench_writer.py": [
        rf"raw COPY of the same rows .*: +{NUMBER} records/s",
        rf"writer alone .*: +{NUMBER} records/s +\({NUMBER}% of raw COPY\)",
        rf"end to end, capture .*: +{NUMBER} records/s +\({NUMBER}% of raw COPY\)",
        rf"seed-demo records at scale .*: +{NUMBER} s",
    ],
    "bench_backfill_extract.py": [
        rf"plyr extraction, whole CAR: .* of decode_car: {NUMBER}%",
        rf"peak RSS above baseline: {NUMBER} MB",
    ],
    "bench_media.py": [
        rf'"speed_ratio_best": {NUMBER}',
        rf'"rss_growth_mb": {NUMBER}',
        r"RESULT: not judged \(--smoke\)",
    ],
    "bench_fingerprint.py": [
        rf"fingerprinting: .* -> {NUMBER}x real time on one core",
        rf"matched a {NUMBER}-minute mix against {NUMBER} references: cold {NUMBER} ms, best {NUMBER} ms",
        r"mix: 3 of 3 pieces found with their offsets within 1 s; 0 unexpected matches",
        rf"false positives: 0 of {NUMBER} unrelated queries",
        r"RESULT: not judged \(--smoke\)",
    ],
    "bench_backfill_pds.py": [rf"backfill: 3 repos, 30 records indexed in .* -> {NUMBER} records/s"],
    "bench_appview.py": [
        rf"aiohttp hello-world +{NUMBER} +{NUMBER} +{NUMBER} +100%",
        rf"latest feed \(50\) \[microcache 1 s\] +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}% +0",
        rf"latest feed, viewer \[no microcache, no coalescing\] +{NUMBER} .* +0",
    ],
    "bench_appview_mix.py": [
        rf"whole mix +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}% +0",
        rf"track page +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}% +0",
        rf"authenticated viewers .* +{NUMBER}% +0",
        r"drawn 400 requests: .*; \d+ as viewers \(\d+%\)",
        # the pass with labels (200 in --smoke): inserted, measured next to the first, deleted
        r"labels: 200 inserted from did:\S+ \(track labels \d+, takedown labels [1-9]\d*, .*\d+ negated",
        rf"whole mix \[200 labels\] +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}% +0",
        rf"latest feed \(50, by depth\) \[200 labels\] +{NUMBER} .* +0 +0 +0",
        rf"artist tracks \(50\) +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +x{NUMBER} +x{NUMBER}",
    ],
}


def test_every_benchmark_is_covered() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in BENCHMARKS.glob("bench_*.py"))


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(name, marks=[pytest.mark.e2e, pytest.mark.timeout(FIRST_TEST_TIMEOUT_S)])
        if name == "bench_backfill_pds.py" else name
        for name in EXPECTED
    ],
)  # fmt: skip
def test_benchmark_smoke(script: str, pg_server_url: str) -> None:
    if "appview" in script and shutil.which("wrk") is None:
        if os.environ.get("PLYR_TESTS_REQUIRE_ALL") == "1":
            pytest.fail("required by PLYR_TESTS_REQUIRE_ALL but unavailable: wrk (apt-get install wrk)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLYR_TEST_DATABASE_URL": pg_server_url}
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=FIRST_TEST_TIMEOUT_S,
    )  # fmt: skip
    if script == "bench_backfill_pds.py" and run.returncode == EXIT_UNAVAILABLE:
        skip_unless_required(run.stderr.strip().splitlines()[-1])
    assert run.returncode == 0, f"{script} --smoke failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    for pattern in EXPECTED[script]:
        assert re.search(pattern, run.stdout), f"{script}: no line matching {pattern!r} in:\n{run.stdout}"


def test_appview_mix_smoke_with_a_replica_and_two_workers(pg_server_url: str) -> None:
    """The mix's --replica (a streaming replica made for the run) and --workers options."""
    if shutil.which("wrk") is None and os.environ.get("PLYR_TESTS_REQUIRE_ALL") == "1":
        pytest.fail("required by PLYR_TESTS_REQUIRE_ALL but unavailable: wrk (apt-get install wrk)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLYR_TEST_DATABASE_URL": pg_server_url}
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_appview_mix.py"), "--smoke", "--replica", "--workers", "1,2",
         "--labels", "0"],  # the labels pass is --smoke's own test
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=FIRST_TEST_TIMEOUT_S,
    )  # fmt: skip
    assert run.returncode == 0, f"failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    for pattern in [
        rf"whole mix \[2 workers\] +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}% +0",
        rf"whole mix \[2 workers, replica\] +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}% +0",
        r"2 workers vs 1 worker: req/s ratio",
        r"1 worker, replica vs 1 worker: req/s ratio",
        rf"  whole mix +req/s x{NUMBER} +p99 x{NUMBER}",
    ]:
        assert re.search(pattern, run.stdout), f"no line matching {pattern!r} in:\n{run.stdout}"
