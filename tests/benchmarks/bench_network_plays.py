"""What network plays (teal.fm records, issue 17) cost the writer (a plain script, not collected
by pytest).

    .venv/bin/python tests/benchmarks/bench_network_plays.py [--tracks N] [--plays N] [--batch N] [--smoke]

Into a fresh migrated database, through `apply_batch` one batch after another:
- tracks (N, 10 per artist): their batches now also lock their title keys and run the match
  statement;
- likes of those tracks (the same count as plays): the path network plays do not touch, for
  comparison;
- plays (half named by metadata, a quarter by at:// URI, a quarter naming nothing of ours),
  by many listeners: rows, the match statement and the counters;
- the tracks written again (same titles): every play sharing a title key is re-decided.
Then the stats read (getTrackPlays' statement) on the primary key: best of 200.

Postgres: PLYR_TEST_DATABASE_URL or DATABASE_URL (a database is created and dropped), else an
embedded one. `--smoke`: tiny data, to check that the benchmark works.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.bench_setup import ScratchDatabase, isolate, server_url  # noqa: E402

CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
BASE_MICROS = 1_767_225_600_000_000


def _did(prefix: str, i: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return f"did:plc:{prefix}" + "".join(alphabet[(i >> (5 * k)) & 31] for k in range(12))


async def run(args: argparse.Namespace, url: str) -> None:
    from core import db
    from core.settings import CoreSettings
    from indexer.records import RecordOp
    from indexer.writer import apply_batch, default_lexicons
    from protocol.syntax import TidClock

    lexicons = default_lexicons()
    clock = TidClock()
    pool = await db.create_pool(url, CoreSettings.from_env(), min_size=1, max_size=2)
    try:
        tracks: list[tuple[str, str, str]] = []  # (did, rkey, title)
        track_ops: list[RecordOp] = []
        for i in range(args.tracks):
            did, rkey, title = _did("art", i // 10), clock.next(), f"Song number {i}"
            tracks.append((did, rkey, title))
            record = {"$type": "fm.plyr.track", "title": title, "artist": f"Artist {i // 10}", "fileType": "mp3",
                      "audioUrl": "https://cdn.example/a.mp3", "duration": 180, "createdAt": "2026-01-01T00:00:00Z"}  # fmt: skip
            track_ops.append(RecordOp("create", did, "fm.plyr.track", rkey, clock.next(), CID, record))

        def play_op(j: int) -> RecordOp:
            did, rkey, title = tracks[j % len(tracks)]
            record: dict[str, Any] = {"$type": "fm.teal.alpha.feed.play", "trackName": title, "playedTime": "2026-01-02T00:00:00Z"}
            kind = j % 4
            if kind in (0, 1):
                record |= {"artists": [{"artistName": f"Artist {(j % len(tracks)) // 10}"}], "duration": 181}
            elif kind == 2:
                record |= {"originUrl": f"at://{did}/fm.plyr.track/{rkey}"}
            else:
                record |= {"trackName": f"Not ours {j}", "artists": [{"artistName": "Somebody"}]}
            return RecordOp("create", _did("fan", j // 20), "fm.teal.alpha.feed.play", clock.next(), clock.next(), CID, record)

        def like_op(j: int) -> RecordOp:
            did, rkey, _ = tracks[j % len(tracks)]
            record = {"$type": "fm.plyr.like", "subject": {"uri": f"at://{did}/fm.plyr.track/{rkey}", "cid": CID},
                      "createdAt": "2026-01-02T00:00:00Z"}  # fmt: skip
            return RecordOp("create", _did("lik", j // 20), "fm.plyr.like", clock.next(), clock.next(), CID, record)

        async def write(name: str, ops: list[RecordOp]) -> None:
            t0 = time.perf_counter()
            for k in range(0, len(ops), args.batch):
                async with pool.acquire() as conn:
                    result = await apply_batch(conn, ops[k : k + args.batch], lexicons=lexicons)
                assert result.invalid == 0, result
            seconds = time.perf_counter() - t0
            print(f"{name:52s} {len(ops) / seconds:>10,.0f} records/s  ({len(ops):,} in {seconds:.2f} s)")

        await write(f"tracks (batches of {args.batch})", track_ops)
        await write(f"likes of them (batches of {args.batch})", [like_op(j) for j in range(args.plays)])
        await write(f"network plays (batches of {args.batch})", [play_op(j) for j in range(args.plays)])
        again = [RecordOp("update", o.did, o.collection, o.rkey, clock.next(), CID, o.record) for o in track_ops]
        await write("tracks again: their plays re-decided", again)

        matched = await pool.fetch("SELECT match_method, count(*) AS n FROM network_plays GROUP BY 1 ORDER BY 1")
        print("plays by match: " + ", ".join(f"{r['match_method'] or 'none'} {r['n']:,}" for r in matched))
        did, rkey, _ = tracks[0]
        uri = f"at://{did}/fm.plyr.track/{rkey}"
        best = float("inf")
        for _ in range(200):
            t0 = time.perf_counter()
            await pool.fetchrow(
                """SELECT coalesce(c.play_count, 0), coalesce(n.play_count, 0), coalesce(n.url_count, 0)
                   FROM tracks t LEFT JOIN play_counts c ON c.track_uri = t.uri
                   LEFT JOIN network_play_counts n ON n.track_uri = t.uri WHERE t.uri = $1""",
                uri,
            )
            best = min(best, time.perf_counter() - t0)
        print(f"track stats read (plays and network plays): {best * 1000:.3f} ms best of 200")
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=5000)
    parser.add_argument("--plays", type=int, default=50000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.tracks, args.plays, args.batch = 40, 400, 100
    server = server_url()
    isolate()
    print(f"python {sys.version.split()[0]}; {args.tracks:,} tracks, {args.plays:,} plays and likes")

    async def go() -> None:
        scratch = ScratchDatabase(server)
        url = await scratch.create()
        try:
            await run(args, url)
        finally:
            await scratch.drop()

    asyncio.run(go())


if __name__ == "__main__":
    main()
