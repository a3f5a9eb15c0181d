"""Benchmark: backfill throughput from a real local PDS (50 repos, 5,000 plyr records).

Starts the e2e harness's PLC + PDS (tests/e2e/pds, `npm ci` done once), creates 50 accounts
with 100 fm.plyr.* records each (60 tracks, 30 likes, 10 comments) plus 20 bsky posts, then runs
the backfill from the PDS's listRepos into a fresh Postgres database (created on
PLYR_TEST_DATABASE_URL or DATABASE_URL, else the embedded server; dropped at the end) and reports
records/s. `--smoke`: 3 repos of 10 records, to check that the benchmark works. Without npm (and
no installed harness) it exits with status 3 (EXIT_UNAVAILABLE).

Run: PLYR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
     .venv/bin/python tests/benchmarks/bench_backfill_pds.py [--repos 50] [--per-repo 100]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from core import db  # noqa: E402
from core.settings import CoreSettings  # noqa: E402
from indexer.backfill.http import Politeness  # noqa: E402
from indexer.backfill.runner import BackfillOptions, run_backfill  # noqa: E402
from tests.e2e.pds_client import PdsClient, write_op  # noqa: E402
from tests.e2e.pds_network import (  # noqa: E402
    HarnessUnavailable,
    ensure_installed,
    start_network,
    stop_network,
)
from tests.support.bench_setup import ScratchDatabase, isolate, server_url  # noqa: E402
from tests.support.identity import local_resolver  # noqa: E402

EXIT_UNAVAILABLE = 3  # the PDS harness cannot be installed here (no npm)


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def populate(
    pds_url: str, admin_password: str, domain: str, repos: int, per_repo: int
) -> int:
    async with PdsClient(pds_url, admin_password=admin_password) as pds:
        total = 0
        for n in range(repos):
            handle = f"bench{n}-{uuid.uuid4().hex[:6]}{domain}"
            acct = await pds.create_account(handle, f"{handle}@example.test", "bench-password-1")
            n_tracks = per_repo * 6 // 10
            tracks = await pds.apply_writes(acct, [
                write_op("create", "fm.plyr.track", value={"title": f"T{i}", "artist": "Bench", "fileType": "mp3", "createdAt": now()})
                for i in range(n_tracks)
            ])  # fmt: skip
            rest = per_repo - n_tracks
            likes = rest * 3 // 4
            writes = [
                write_op(
                    "create",
                    "fm.plyr.like",
                    value={
                        "subject": {"uri": tracks[i]["uri"], "cid": tracks[i]["cid"]},
                        "createdAt": now(),
                    },
                )
                for i in range(likes)
            ]
            writes += [
                write_op(
                    "create",
                    "fm.plyr.comment",
                    value={
                        "subject": {"uri": tracks[i]["uri"], "cid": tracks[i]["cid"]},
                        "text": "great",
                        "timestampMs": 1000 * i,
                        "createdAt": now(),
                    },
                )
                for i in range(rest - likes)
            ]
            writes += [
                write_op(
                    "create", "app.bsky.feed.post", value={"text": f"post {i}", "createdAt": now()}
                )
                for i in range(20)
            ]
            await pds.apply_writes(acct, writes)
            total += per_repo
        return total


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", type=int, default=50)
    ap.add_argument("--per-repo", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--smoke", action="store_true", help="3 repos of 10 records: checks that it works")
    args = ap.parse_args()
    if args.smoke:
        args.repos, args.per_repo = 3, 10
    server = server_url()
    # The PLC and PDS of this benchmark listen on loopback, which outbound fetches refuse by default.
    isolate()
    print(
        "command: PLYR_TEST_DATABASE_URL=... .venv/bin/python tests/benchmarks/bench_backfill_pds.py",
        *sys.argv[1:],
    )
    log_dir = Path(tempfile.mkdtemp(prefix="plyr-bench-pds-"))
    try:
        ensure_installed(log_dir)
    except HarnessUnavailable as exc:
        print(exc, file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)
    proc, info, _ready, _log = start_network(log_dir)
    try:
        async with ScratchDatabase(server) as url:
            await measure(url, info, args)
    finally:
        stop_network(proc)


async def measure(url: str, info: dict[str, Any], args: argparse.Namespace) -> None:
    t = time.perf_counter()
    expected = await populate(info["pds_url"], info["admin_password"],
                              info["handle_domains"][0], args.repos, args.per_repo)
    print(f"populated {args.repos} repos, {expected} plyr records in {time.perf_counter() - t:.1f} s")
    pool = await db.create_pool(url, CoreSettings.from_env(), min_size=2, max_size=10)
    resolver = local_resolver(info["plc_url"])
    try:
        opts = BackfillOptions(
            pds=[info["pds_url"]], progress_tty=False, progress_interval=3600,
            politeness=Politeness(concurrency=args.concurrency, per_host=args.concurrency),
        )  # fmt: skip
        t = time.perf_counter()
        summary = await run_backfill(pool, opts, resolver=resolver)
        elapsed = time.perf_counter() - t
        rows = await pool.fetchval(
            "SELECT (SELECT count(*) FROM tracks) + (SELECT count(*) FROM likes) + (SELECT count(*) FROM comments)"
        )
    finally:
        await resolver.close()
        await pool.close()
    print("\n".join(summary.lines()))
    if rows != expected or summary.failures:
        sys.exit(f"backfill incomplete: {rows} of {expected} records, failures {summary.failures}")
    print(
        f"backfill: {summary.done} repos, {rows} records indexed in {elapsed:.2f} s -> "
        f"{rows / elapsed:.0f} records/s, {summary.done / elapsed:.1f} repos/s "
        f"(concurrency {args.concurrency}, signatures and CIDs verified, DIDs resolved via PLC)"
    )


if __name__ == "__main__":
    asyncio.run(main())
