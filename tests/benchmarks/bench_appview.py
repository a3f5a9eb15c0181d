"""AppView load benchmark: seeded index, 64 concurrent connections (wrk), requests/s and
p50/p99 latency of the main read paths next to an aiohttp hello-world in the same run.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/plyr_bench .venv/bin/python \
        tests/benchmarks/bench_appview.py [--seed] [--duration 10] [--connections 64]

`--seed` runs `plyr seed-demo` first (100k tracks, 10k artists, 1M likes, 200k comments,
1M plays) when the database holds no tracks; `tracks` is then vacuumed (what autovacuum does on
a live index). The AppView runs as `plyr serve` in its own process, three times: the default
(1 s microcache), without the microcache (identical concurrent requests coalesce), and
without either (each request its own database trips); the track view cache is on (1 s, the
default) in all three. wrk (Debian package `wrk`) generates the load with one thread; the
"viewer" rows send a service-auth JWT of one viewer.
Targets (issue 5): p99 < 25 ms for each path; latest feed >= 40% of hello-world requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: import the project
PY = sys.executable
HELLO = """
import uvloop
from aiohttp import web
async def hello(_r): return web.Response(text="Hello, world")
app = web.Application(); app.router.add_get("/", hello)
uvloop.install()
web.run_app(app, host="127.0.0.1", port={port}, access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def parse_latency(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, duration: int, connections: int, extra: list[str] | None = None) -> dict[str, float | str]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *(extra or []), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = parse_latency(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = parse_latency(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
            "errors": errors.group(0) if errors else "", "cmd": " ".join(cmd)}


async def pick_targets(url: str) -> tuple[dict[str, str], str]:
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
        "latest feed (50)": "/xrpc/fm.plyr.feed.getLatestTracks?limit=50",
        "track": f"/xrpc/fm.plyr.feed.getTrack?uri={quote(track, safe='')}",
        "actor likes (50)": f"/xrpc/fm.plyr.feed.getActorLikes?actor={quote(liker)}&limit=50",
        "comments (50)": f"/xrpc/fm.plyr.feed.getComments?uri={quote(commented, safe='')}&limit=50",
        "stats": "/xrpc/fm.plyr.stats.getPlatformStats",
    }, liker


PLC = """
import sys, orjson
from aiohttp import web
docs = orjson.loads(sys.stdin.buffer.read())
async def doc(request):
    d = docs.get(request.match_info["did"])
    return web.json_response(d) if d else web.Response(status=404)
app = web.Application(); app.router.add_get("/{did}", doc)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def start_plc(viewer_did: str, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """A PLC directory on loopback serving one viewer's DID document; returns a service-auth
    token of that viewer for getLatestTracks."""
    from protocol.crypto import PrivateKey
    from protocol.service_auth import create_service_jwt

    key = PrivateKey.generate("k256")
    doc = {"id": viewer_did, "verificationMethod": [{
        "id": viewer_did + "#atproto", "type": "Multikey", "controller": viewer_did,
        "publicKeyMultibase": key.public_key().multibase()}]}
    proc = subprocess.Popen([PY, "-c", PLC, str(port)], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    import orjson

    proc.stdin.write(orjson.dumps({viewer_did: doc}))
    proc.stdin.close()
    wait_http(f"http://127.0.0.1:{port}/{viewer_did}")
    token = create_service_jwt(key, iss=viewer_did, aud="did:web:127.0.0.1#plyr_appview",
                               lxm="fm.plyr.feed.getLatestTracks", exp_in=3600)
    return proc, token


def start_appview(db_url: str, port: int, microcache: float, coalesce: bool, plc_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": db_url, "PLYR_APPVIEW_PORT": str(port),
           "PLYR_PLC_URL": plc_url, "PLYR_SERVICE_DID": "did:web:127.0.0.1",
           "PLYR_ALLOW_PRIVATE_NETWORK": "true",  # the benchmark's PLC directory is on loopback
           "PLYR_PUBLIC_URL": "http://127.0.0.1",  # the DID's host (a did:web must name ours)
           "PLYR_APPVIEW_MICROCACHE_SECONDS": str(microcache), "PLYR_LOG_LEVEL": "WARNING",
           "PLYR_APPVIEW_COALESCE": "1" if coalesce else "0",
           "PLYR_DB_POOL_MAX": os.environ.get("PLYR_DB_POOL_MAX", "4")}  # 2 cores: fewer, busier connections
    proc = subprocess.Popen([PY, "-m", "plyr", "serve", "--port", str(port)], cwd=ROOT, env=env)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--seed", action="store_true", help="seed the demo dataset if the index is empty")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if not args.database_url:
        sys.exit("set DATABASE_URL (or --database-url) to a PostgreSQL database for the benchmark")
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    if args.seed:
        # An empty database has no tables yet: migrate first (a no-op when up to date).
        subprocess.run([PY, "-m", "plyr", "migrate"], cwd=ROOT, check=True,
                       env={**os.environ, "DATABASE_URL": args.database_url})
        conn_count = asyncio.run(_count_tracks(args.database_url))
        if conn_count == 0:
            started = time.monotonic()
            subprocess.run([PY, "-m", "plyr", "seed-demo"], cwd=ROOT, check=True,
                           env={**os.environ, "DATABASE_URL": args.database_url})
            print(f"seeded in {time.monotonic() - started:.1f}s")
    asyncio.run(_vacuum(args.database_url))
    targets, viewer = asyncio.run(pick_targets(args.database_url))
    counts = asyncio.run(_sizes(args.database_url))
    print("dataset:", ", ".join(f"{k}={v}" for k, v in counts.items()))

    hello_port = free_port()
    hello = subprocess.Popen([PY, "-c", HELLO.format(port=hello_port)])
    rows: list[tuple[str, dict[str, float | str]]] = []
    try:
        wait_http(f"http://127.0.0.1:{hello_port}/")
        wrk(f"http://127.0.0.1:{hello_port}/", 2, args.connections)  # warm-up
        rows.append(("aiohttp hello-world", wrk(f"http://127.0.0.1:{hello_port}/", args.duration, args.connections)))
    finally:
        stop(hello)

    plc_port = free_port()
    plc, token = start_plc(viewer, plc_port)
    try:
        # The default (microcache 1 s); no microcache (every request reads the index; identical
        # concurrent requests coalesce); and neither (each request its own database trip).
        configs = [("microcache 1 s", 1.0, True), ("no microcache", 0.0, True),
                   ("no microcache, no coalescing", 0.0, False)]
        for label, microcache, coalesce in configs:
            port = free_port()
            app = start_appview(args.database_url, port, microcache, coalesce, f"http://127.0.0.1:{plc_port}")
            try:
                base = f"http://127.0.0.1:{port}"
                for name, path in targets.items():
                    wrk(base + path, 2, args.connections)  # warm-up: pool, plans, caches
                    rows.append((f"{name} [{label}]", wrk(base + path, args.duration, args.connections)))
                # an authenticated viewer: the shared page plus their own likes (one query)
                latest = base + targets["latest feed (50)"]
                auth = ["-H", f"Authorization: Bearer {token}"]
                wrk(latest, 2, args.connections, auth)
                rows.append((f"latest feed, viewer [{label}]", wrk(latest, args.duration, args.connections, auth)))
            finally:
                stop(app)
    finally:
        stop(plc)

    hello_rps = float(rows[0][1]["rps"])
    print(f"\n{'path':<56} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'% hello':>8}  non-2xx")
    for name, r in rows:
        print(f"{name:<56} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
              f"{100 * float(r['rps']) / hello_rps:>7.0f}%  {int(float(r['non2xx']))} {r['errors']}")
    print(f"\nload: {rows[0][1]['cmd'].split(' http')[0]} <url>  (wrk, one thread, {args.connections} connections)")
    print("command: DATABASE_URL=... .venv/bin/python tests/benchmarks/bench_appview.py --seed")


async def _count_tracks(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM (SELECT 1 FROM tracks LIMIT 1) s"))
    finally:
        await conn.close()


async def _vacuum(url: str) -> None:
    """What autovacuum reaches on a live index: statistics, and a visibility map that lets the
    latest feed's keys come from the index alone (a fresh seed has neither yet)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM (ANALYZE) tracks")
    finally:
        await conn.close()


async def _sizes(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}"))
                for t in ("tracks", "actors", "likes", "comments", "plays")}
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
