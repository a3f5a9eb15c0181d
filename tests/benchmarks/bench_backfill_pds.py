"""Benchmark: backfill throughput from a real local PDS (50 repos, 5,000 plyr records).

Starts the e2e harness's PLC + PDS (tests/e2e/pds, `npm ci` done once), creates 50 accounts
with 100 fm.plyr.* records each (60 tracks, 30 likes, 10 comments) plus 20 bsky posts, then runs
the backfill from the PDS's listRepos into a fresh Postgres database (created from
PLYR_TEST_DATABASE_URL or DATABASE_URL, dropped at the end) and reports records/s.

Run: PLYR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
     .venv/bin/python tests/benchmarks/bench_backfill_pds.py [--repos 50] [--per-repo 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
# The PLC and PDS of this benchmark listen on loopback, which outbound fetches refuse by default.
os.environ["PLYR_ALLOW_PRIVATE_NETWORK"] = "true"

import asyncpg  # noqa: E402

from core import db  # noqa: E402
from core.migrate import apply_migrations  # noqa: E402
from core.settings import CoreSettings  # noqa: E402
from indexer.backfill.http import Politeness  # noqa: E402
from indexer.backfill.runner import BackfillOptions, run_backfill  # noqa: E402
from tests.e2e.pds_client import PdsClient, write_op  # noqa: E402
from tests.e2e.pds_network import ensure_installed, start_network, stop_network  # noqa: E402
from tests.support.identity import local_resolver  # noqa: E402


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
    args = ap.parse_args()
    server = os.environ.get("PLYR_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not server:
        sys.exit(
            "set PLYR_TEST_DATABASE_URL (a Postgres server where a scratch database may be created)"
        )
    print(
        "command: PLYR_TEST_DATABASE_URL=... .venv/bin/python tests/benchmarks/bench_backfill_pds.py",
        *sys.argv[1:],
    )
    log_dir = Path(tempfile.mkdtemp(prefix="plyr-bench-pds-"))
    ensure_installed(log_dir)
    proc, info, _ready, _log = start_network(log_dir)
    name = f"plyr_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(server)._replace(path="/" + name))
    try:
        t = time.perf_counter()
        expected = await populate(
            info["pds_url"],
            info["admin_password"],
            info["handle_domains"][0],
            args.repos,
            args.per_repo,
        )
        print(
            f"populated {args.repos} repos, {expected} plyr records in {time.perf_counter() - t:.1f} s"
        )
        conn = await db.connect(url)
        await apply_migrations(conn)
        await conn.close()
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
        assert rows == expected and not summary.failures, (rows, expected, summary.failures)
        print(
            f"backfill: {summary.done} repos, {rows} records indexed in {elapsed:.2f} s -> "
            f"{rows / elapsed:.0f} records/s, {summary.done / elapsed:.1f} repos/s "
            f"(concurrency {args.concurrency}, signatures and CIDs verified, DIDs resolved via PLC)"
        )
    finally:
        stop_network(proc)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
