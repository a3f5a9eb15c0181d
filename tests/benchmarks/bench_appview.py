"""AppView load benchmark: the main read paths of a seeded index under concurrent load (wrk),
requests/s and p50/p99 latency next to an aiohttp hello-world measured in the same run.

    PLYR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python \
        tests/benchmarks/bench_appview.py [--duration 10] [--connections 64] [--tracks 100000]
    .venv/bin/python tests/benchmarks/bench_appview.py --smoke    # tiny, a few seconds

A fresh database is created on the server (PLYR_TEST_DATABASE_URL or DATABASE_URL, else the
embedded one), seeded with the `plyr seed-demo` dataset (default 100k tracks, 10k artists,
1M likes, 200k comments, 1M plays) and dropped at the end. The AppView runs as `plyr serve` in
its own process, three times: the default (1 s microcache), without the microcache (identical
concurrent requests coalesce), and without either (each request its own database trips); the
track view cache is on (1 s, the default) in all three. wrk (Debian package `wrk`) generates
the load with one thread; the "viewer" rows send a service-auth JWT of one viewer.
Targets (issue 5): p99 < 25 ms for each path; latest feed >= 40% of hello-world requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from urllib.parse import quote

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: import the project

from tests.support.bench_load import (  # noqa: E402
    LoadResult,
    Request,
    Viewers,
    have_wrk,
    load,
    start_appview,
    start_hello,
    stop,
    table,
)
from tests.support.bench_setup import ScratchDatabase, isolate, seed_demo, server_url  # noqa: E402

LATEST = "fm.plyr.feed.getLatestTracks"
# (label, microcache seconds, coalescing): the default; no microcache (every request reads the
# index, identical concurrent requests share one answer); neither (each its own database trip).
CONFIGS = [("microcache 1 s", 1.0, True), ("no microcache", 0.0, True),
           ("no microcache, no coalescing", 0.0, False)]


async def pick_targets(url: str) -> tuple[dict[str, str], str]:
    """The paths measured (popular but not the most popular subjects) and the viewer's DID."""
    conn = await asyncpg.connect(url)
    try:
        track = await conn.fetchval(
            "SELECT subject_uri FROM track_counts ORDER BY like_count DESC LIMIT 1 OFFSET 10")
        commented = await conn.fetchval(
            "SELECT subject_uri FROM track_counts ORDER BY comment_count DESC LIMIT 1 OFFSET 10")
        liker = await conn.fetchval(
            "SELECT did FROM likes GROUP BY did ORDER BY count(*) DESC LIMIT 1 OFFSET 10")
    finally:
        await conn.close()
    return {
        "latest feed (50)": f"/xrpc/{LATEST}?limit=50",
        "track": f"/xrpc/fm.plyr.feed.getTrack?uri={quote(track, safe='')}",
        "actor likes (50)": f"/xrpc/fm.plyr.feed.getActorLikes?actor={quote(liker)}&limit=50",
        "comments (50)": f"/xrpc/fm.plyr.feed.getComments?uri={quote(commented, safe='')}&limit=50",
        "stats": "/xrpc/fm.plyr.stats.getPlatformStats",
    }, liker


async def sizes(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}"))  # noqa: S608 - fixed names
                for t in ("tracks", "actors", "likes", "comments", "plays")}
    finally:
        await conn.close()


def measure(base: str, requests: list[Request], args: argparse.Namespace) -> LoadResult:
    if args.warmup:
        load(base, requests, duration=args.warmup, connections=args.connections)  # pool, plans, caches
    return load(base, requests, duration=args.duration, connections=args.connections)


def run(db_url: str, args: argparse.Namespace) -> list[tuple[str, LoadResult]]:
    targets, viewer = asyncio.run(pick_targets(db_url))
    print("dataset:", ", ".join(f"{k}={v}" for k, v in asyncio.run(sizes(db_url)).items()))
    hello, hello_url = start_hello()
    try:
        rows = [("aiohttp hello-world", measure(hello_url.rstrip("/"), [Request("/")], args))]
    finally:
        stop(hello)
    viewers = Viewers([viewer])
    plc_url = viewers.start_plc()
    token = viewers.token(viewer, LATEST)
    try:
        # --smoke: the ends only (every code path of the script, in half the time)
        for label, microcache, coalesce in CONFIGS[::2] if args.smoke else CONFIGS:
            app, base = start_appview(db_url, plc_url, microcache=microcache, coalesce=coalesce,
                                      pool_max=args.pool_max)
            try:
                for name, path in targets.items():
                    rows.append((f"{name} [{label}]", measure(base, [Request(path)], args)))
                # an authenticated viewer: the shared page plus their own likes (one query)
                viewer_page = [Request(targets["latest feed (50)"], token)]
                rows.append((f"latest feed, viewer [{label}]", measure(base, viewer_page, args)))
            finally:
                stop(app)
    finally:
        viewers.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny dataset and 1 s runs: checks that the benchmark works")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pool-max", type=int, default=4, help="the AppView's database pool")
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--artists", type=int, default=10_000)
    parser.add_argument("--likes", type=int, default=1_000_000)
    parser.add_argument("--comments", type=int, default=200_000)
    parser.add_argument("--plays", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.warmup, args.connections = 1, 0, 4
        args.tracks, args.artists, args.likes, args.comments, args.plays = 300, 30, 2000, 500, 500
    elif not have_wrk():
        sys.exit("wrk is not installed (apt-get install -y wrk); only --smoke runs without it")
    server = server_url()
    isolate()
    with ScratchDatabase(server) as db_url:
        asyncio.run(seed_demo(db_url, tracks=args.tracks, artists=args.artists, likes=args.likes,
                              comments=args.comments, plays=args.plays))
        rows = run(db_url, args)
    print()
    print(table(rows, rows[0][1]))
    print(f"\nhello-world: {rows[0][1].rps:.0f} req/s; load: {rows[0][1].tool}, one thread, "
          f"{args.connections} connections, {args.duration:g} s per path")
    print("command:", " ".join([".venv/bin/python", "tests/benchmarks/bench_appview.py", *sys.argv[1:]]))
    # Slow answers are a result, except in --smoke, where nothing may go wrong.
    broken = [name for name, r in rows if r.failed or (args.smoke and r.timeouts)]
    if broken:
        sys.exit(f"failed requests in: {', '.join(broken)}")


if __name__ == "__main__":
    main()
