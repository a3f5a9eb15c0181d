"""AppView under a realistic request mix: requests/s and p50/p99 per path and for the whole mix,
next to an aiohttp hello-world measured in the same run.

    PLYR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python \\
        tests/benchmarks/bench_appview_mix.py [--tracks 20000 --likes 200000] [--duration 10] \\
        [--connections 64]
    .venv/bin/python tests/benchmarks/bench_appview_mix.py --smoke    # tiny, a few seconds

A fresh database is created on the server (PLYR_TEST_DATABASE_URL or DATABASE_URL, else the
embedded one), filled with the `plyr seed-demo` dataset and dropped at the end. With
`--keep-db NAME` the database NAME is kept between runs instead: created and migrated when
missing, seeded only when it holds no tracks (seeding 100k tracks takes minutes), never dropped. The AppView runs
as `plyr serve` with the microcache off, so every request does its own database work (identical
requests in flight at the same moment still share one answer, and track views are still cached
for 1 s: both are how production runs).

The requests are drawn before the load starts, like real traffic:
- track pages and their comments: tracks Zipf-distributed by popularity (rank by likes);
- artist pages (profile, tracks) and people's likes pages: Zipf over artists / likers;
- the latest and top feeds at random depths (page 1 most often), with real cursors fetched by
  paging through the feeds first;
- a share of the requests (20% by default) from authenticated viewers: service-auth JWTs of
  several viewer DIDs that have likes of their own in the index (so their pages carry their own
  like state), on the paths that show viewer state.
wrk replays the drawn requests (a Lua script reads the request file); each path is also run on
its own (its requests from the same draw) for per-path figures. Without wrk (`--smoke` only), an
aiohttp client loop sends them.

With `--labels N` (200 in `--smoke`) everything is measured a second time in the same run, the
AppView then subscribed to one labeler and moderating with it (PLYR_LABELERS,
PLYR_MODERATION_LABELERS) and N labels of that labeler in `labels` (tests/support/bench_labels.py:
content labels, takedowns, account and comment labels, negations, expiries), and both passes
are printed side by side; the labels are deleted at the end, also when the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import sys
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: import the project

from tests.support import bench_labels  # noqa: E402
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
from tests.support.bench_setup import (  # noqa: E402
    ScratchDatabase,
    database_url,
    isolate,
    seed_demo,
    server_url,
)
from tests.support.replica import start_streaming_pair  # noqa: E402

XRPC = "/xrpc/"


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix (one XRPC method)."""

    name: str
    method: str  # XRPC method NSID (a viewer's token names it)
    weight: float  # share of the anonymous requests
    viewer_weight: float  # share of the authenticated requests (0: shows no viewer state)


KINDS = [
    Kind("track page", "fm.plyr.feed.getTrack", 0.35, 0.40),
    Kind("comments (50)", "fm.plyr.feed.getComments", 0.15, 0.0),
    Kind("latest feed (50, by depth)", "fm.plyr.feed.getLatestTracks", 0.15, 0.25),
    Kind("top feed, week (50, by depth)", "fm.plyr.feed.getTopTracks", 0.10, 0.10),
    Kind("artist tracks (50)", "fm.plyr.feed.getArtistTracks", 0.10, 0.15),
    Kind("artist profile", "fm.plyr.actor.getProfile", 0.05, 0.0),
    Kind("actor likes (50)", "fm.plyr.feed.getActorLikes", 0.05, 0.10),
    Kind("platform stats", "fm.plyr.stats.getPlatformStats", 0.05, 0.0),
]


@dataclass
class Universe:
    """What the requests are drawn over, read from the seeded index."""

    tracks: list[str]  # by popularity, most liked first
    artists: list[str]  # by catalogue size, largest first
    likers: list[str]  # by likes given, most first
    viewers: list[str]  # DIDs that like things: the authenticated viewers
    feed_cursors: dict[str, list[str]]  # method -> cursor of page 2, 3, ... (page 1 has none)


async def read_universe(url: str, n_viewers: int) -> Universe:
    conn = await asyncpg.connect(url)
    try:
        tracks = [r[0] for r in await conn.fetch(
            "SELECT t.uri FROM tracks t LEFT JOIN track_counts c ON c.subject_uri = t.uri"
            " ORDER BY coalesce(c.like_count, 0) DESC, t.uri")]
        artists = [r[0] for r in await conn.fetch(
            "SELECT did FROM tracks GROUP BY did ORDER BY count(*) DESC, did")]
        likers = [r[0] for r in await conn.fetch(
            "SELECT did FROM likes GROUP BY did ORDER BY count(*) DESC, did")]
    finally:
        await conn.close()
    if not tracks or not likers:
        raise SystemExit("the seeded index has no tracks or no likes")
    # Viewers spread over the likers: heavy likers and light ones.
    step = max(1, len(likers) // n_viewers)
    viewers = likers[::step][:n_viewers]
    return Universe(tracks, artists, likers, viewers, {})  # fmt: skip


def get_json(url: str, token: str = "") -> dict[str, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def page_feeds(base: str, universe: Universe, depth: int) -> None:
    """Real cursors: page through each feed as a client would, `depth` pages deep."""
    for method, params in (("fm.plyr.feed.getLatestTracks", {"limit": 50}),
                           ("fm.plyr.feed.getTopTracks", {"period": "week", "limit": 50})):
        cursors: list[str] = []
        query = dict(params)
        for _ in range(depth - 1):
            cursor = get_json(f"{base}{XRPC}{method}?{urlencode(query)}").get("cursor")
            if not isinstance(cursor, str):
                break  # the feed is shorter than that
            cursors.append(cursor)
            query = {**params, "cursor": cursor}
        universe.feed_cursors[method] = cursors


def zipf_picker(items: Sequence[str], exponent: float, rng: random.Random) -> Callable[[], str]:
    """Draws items[k] with probability proportional to 1 / (k + 1) ** exponent."""
    cumulative = list(itertools.accumulate(1 / (k + 1) ** exponent for k in range(len(items))))

    def pick() -> str:
        return rng.choices(items, cum_weights=cumulative)[0]

    return pick


def draw_requests(universe: Universe, viewers: Viewers, args: argparse.Namespace,
                  ) -> list[tuple[Kind, Request]]:
    rng = random.Random(args.random_seed)
    track = zipf_picker(universe.tracks, args.zipf, rng)
    artist = zipf_picker(universe.artists, args.zipf, rng)
    liker = zipf_picker(universe.likers, args.zipf, rng)

    def feed_query(method: str, params: dict[str, object]) -> dict[str, object]:
        cursors = universe.feed_cursors.get(method, [])
        page = min(int(rng.expovariate(0.7)), len(cursors))  # page 1 most often, then fewer
        return {**params, "cursor": cursors[page - 1]} if page else params

    queries: dict[str, Callable[[], dict[str, object]]] = {
        "fm.plyr.feed.getTrack": lambda: {"uri": track()},
        "fm.plyr.feed.getComments": lambda: {"uri": track(), "limit": 50},
        "fm.plyr.feed.getLatestTracks": lambda: feed_query("fm.plyr.feed.getLatestTracks", {"limit": 50}),
        "fm.plyr.feed.getTopTracks": lambda: feed_query(
            "fm.plyr.feed.getTopTracks", {"period": "week", "limit": 50}),
        "fm.plyr.feed.getArtistTracks": lambda: {"actor": artist(), "limit": 50},
        "fm.plyr.actor.getProfile": lambda: {"actor": artist()},
        "fm.plyr.feed.getActorLikes": lambda: {"actor": liker(), "limit": 50},
        "fm.plyr.stats.getPlatformStats": dict,
    }  # fmt: skip
    tokens = {(did, k.method): viewers.token(did, k.method)
              for did in universe.viewers for k in KINDS if k.viewer_weight}
    drawn: list[tuple[Kind, Request]] = []
    for _ in range(args.requests):
        viewer = rng.choice(universe.viewers) if rng.random() < args.viewer_share else None
        weights = [k.viewer_weight if viewer else k.weight for k in KINDS]
        kind = rng.choices(KINDS, weights)[0]
        target = f"{XRPC}{kind.method}?{urlencode(queries[kind.method](), quote_via=quote)}"
        drawn.append((kind, Request(target, tokens[viewer, kind.method] if viewer else "")))
    return drawn


def check_answers(base: str, drawn: Sequence[tuple[Kind, Request]]) -> None:
    """One request of every kind (anonymous and as a viewer) answered 200 before the load."""
    seen: set[tuple[str, bool]] = set()
    for kind, req in drawn:
        if (kind.name, bool(req.token)) not in seen:
            seen.add((kind.name, bool(req.token)))
            try:
                get_json(base + req.path, req.token)
            except OSError as exc:
                raise SystemExit(f"{kind.name}: {req.path} failed: {exc}") from exc


@dataclass(frozen=True)
class Setup:
    """How the AppView runs for one set of rows: worker processes, and a replica or not."""

    workers: int
    read_url: str = ""

    def label(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}" + (", replica" if self.read_url else "")


def setups(args: argparse.Namespace, read_url: str) -> list[Setup]:
    counts = [int(n) for n in str(args.workers).split(",")]
    return [Setup(n) for n in counts] + ([Setup(n, read_url) for n in counts] if read_url else [])


def row_name(path: str, setup: Setup, every_setup: Sequence[Setup], labels: int = 0) -> str:
    """A row's name: the path, then which setup (when there are several) and the labels."""
    tags = [setup.label()] if len(every_setup) > 1 else []
    if labels:
        tags.append(f"{labels} labels")
    return path + (f" [{', '.join(tags)}]" if tags else "")


PATHS = ["whole mix", *(k.name for k in KINDS), "authenticated viewers (their share of the mix)"]


def run(db_url: str, args: argparse.Namespace, read_url: str = "") -> list[tuple[str, LoadResult]]:
    universe = asyncio.run(read_universe(db_url, args.viewers))
    print(f"universe: {len(universe.tracks)} tracks, {len(universe.artists)} artists, "
          f"{len(universe.likers)} likers, {len(universe.viewers)} viewers", file=sys.stderr)

    def measure(base: str, requests: Sequence[Request]) -> LoadResult:
        return load(base, requests, duration=args.duration, connections=args.connections)

    hello, hello_url = start_hello()
    try:
        rows = [("aiohttp hello-world", measure(hello_url.rstrip("/"), [Request("/")]))]
    finally:
        stop(hello)
    viewers = Viewers(universe.viewers)
    plc_url = viewers.start_plc()
    every_setup = setups(args, read_url)
    drawn: list[tuple[Kind, Request]] = []

    def measure_setups(labels: int) -> None:
        """Every setup's rows; with `labels`, the AppView hears the benchmark's labeler."""
        nonlocal drawn
        for setup in every_setup:
            app, base = start_appview(db_url, plc_url, microcache=0.0, coalesce=not args.no_coalesce,
                                      pool_max=args.pool_max, workers=setup.workers, read_urls=setup.read_url,
                                      settings=bench_labels.settings() if labels else None)
            try:
                if not drawn:  # the same requests for every setup, with labels or not
                    page_feeds(base, universe, args.feed_depth)
                    drawn = draw_requests(universe, viewers, args)
                    describe(drawn, universe)
                check_answers(base, drawn)
                every = [req for _, req in drawn]
                if args.warmup:
                    load(base, every, duration=args.warmup, connections=args.connections)
                by_path = {"whole mix": every, **{k.name: [r for d, r in drawn if d is k] for k in KINDS},
                           PATHS[-1]: [r for _, r in drawn if r.token]}
                for path in PATHS:
                    rows.append((row_name(path, setup, every_setup, labels), measure(base, by_path[path])))
            finally:
                stop(app)

    try:
        measure_setups(0)
        if args.labels:
            # Never a takedown on a track page the draw asks for: it would answer 404.
            spare = {parse_qs(urlsplit(r.path).query)["uri"][0] for k, r in drawn
                     if k.method == "fm.plyr.feed.getTrack"}
            with bench_labels.labelled(db_url, args.labels, spare, args.random_seed) as inserted:
                print(inserted.describe())
                if read_url:
                    asyncio.run(wait_replayed(db_url, read_url))
                measure_setups(args.labels)
    finally:
        viewers.stop()
    return rows


def compare(rows: Sequence[tuple[str, LoadResult]], args: argparse.Namespace, read_url: str) -> list[str]:
    """Each setup against its baseline in this run (without labels): a replica against the same
    worker count without one, N workers against the first count given."""
    every_setup = setups(args, read_url)
    if len(every_setup) < 2:
        return []
    by_name = dict(rows)
    lines = []
    for setup in every_setup[1:]:
        base = Setup(setup.workers) if setup.read_url else every_setup[0]
        if base == setup:
            continue
        lines.append(f"{setup.label()} vs {base.label()}: req/s ratio, p99 ratio (below 1: faster)")
        for path in PATHS:
            new = by_name[row_name(path, setup, every_setup)]
            old = by_name[row_name(path, base, every_setup)]
            lines.append(f"  {path:<50} req/s x{new.rps / max(old.rps, 1e-9):.2f}  "
                         f"p99 x{new.p99_ms / max(old.p99_ms, 1e-9):.2f}")
    return lines


def compare_labels(rows: Sequence[tuple[str, LoadResult]], args: argparse.Namespace, read_url: str) -> list[str]:
    """Each setup's rows without labels and with them, side by side, and their ratios."""
    if not args.labels:
        return []
    every_setup = setups(args, read_url)
    by_name = dict(rows)
    lines = []
    for setup in every_setup:
        where = f" [{setup.label()}]" if len(every_setup) > 1 else ""
        lines.append(f"\nwithout labels vs with {args.labels} labels{where}:")
        lines.append(f"{'path':<50} {'req/s':>7} {'p99 ms':>8}   {'labels:':<7} {'req/s':>7} {'p99 ms':>8}"
                     f"   {'req/s ratio':>11} {'p99 ratio':>9}")
        for path in PATHS:
            old = by_name[row_name(path, setup, every_setup)]
            new = by_name[row_name(path, setup, every_setup, args.labels)]
            lines.append(f"{path:<50} {old.rps:>7.0f} {old.p99_ms:>8.2f}   {'':<7} {new.rps:>7.0f} "
                         f"{new.p99_ms:>8.2f}   {'x':>5}{new.rps / max(old.rps, 1e-9):<6.2f}"
                         f" {'x':>3}{new.p99_ms / max(old.p99_ms, 1e-9):<6.2f}")
    return lines


async def wait_replayed(primary_url: str, replica_url: str) -> None:
    """Until the replica has replayed the seeded data (its replay position reaches the primary's)."""
    primary, replica = await asyncpg.connect(primary_url), await asyncpg.connect(replica_url)
    try:
        lsn = await primary.fetchval("SELECT pg_current_wal_lsn()")
        # polls another server's replay position: nothing here to wait on instead
        while not await replica.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    finally:
        await primary.close()
        await replica.close()


def describe(drawn: Sequence[tuple[Kind, Request]], universe: Universe) -> None:
    counts = {k.name: sum(1 for drawn_kind, _ in drawn if drawn_kind is k) for k in KINDS}
    viewer = sum(1 for _, r in drawn if r.token)
    distinct = len({r.path for k, r in drawn if k.name == "track page"})
    print(f"drawn {len(drawn)} requests: " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; {viewer} as viewers ({100 * viewer / len(drawn):.0f}%); {distinct} distinct track"
          f" pages; feed depths up to {1 + max(map(len, universe.feed_cursors.values()))} pages")


@contextlib.contextmanager
def kept_database(server: str, name: str) -> Iterator[str]:
    """The database `name` on `server`, created when missing and migrated; not dropped."""

    async def prepare() -> str:
        from core import db
        from core.migrate import apply_migrations

        admin = await asyncpg.connect(server)
        try:
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = database_url(server, name)
        conn = await db.connect(url)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
        return url

    yield asyncio.run(prepare())


async def is_seeded(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tracks)"))
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny dataset and 1 s runs: checks that the benchmark works")
    parser.add_argument("--tracks", type=int, default=20_000)
    parser.add_argument("--artists", type=int, default=2_000)
    parser.add_argument("--likes", type=int, default=200_000)
    parser.add_argument("--comments", type=int, default=40_000)
    parser.add_argument("--plays", type=int, default=200_000)
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of the whole mix first")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pool-max", type=int, default=4, help="the AppView's database pool")
    parser.add_argument("--no-coalesce", action="store_true",
                        help="identical requests in flight do not share an answer either")
    parser.add_argument("--requests", type=int, default=50_000, help="requests drawn (replayed in a loop)")
    parser.add_argument("--viewers", type=int, default=16, help="authenticated viewer DIDs")
    parser.add_argument("--viewer-share", type=float, default=0.2)
    parser.add_argument("--zipf", type=float, default=1.0, help="exponent of the popularity law")
    parser.add_argument("--feed-depth", type=int, default=20, help="pages fetched per feed")
    parser.add_argument("--random-seed", type=int, default=13)
    parser.add_argument("--workers", default="1",
                        help="AppView processes (`plyr serve --workers`); a list (1,2) measures each")
    parser.add_argument("--replica", action="store_true",
                        help="also measure with one streaming replica of the database on this machine"
                             " (a primary and a standby started for the run; the same database without"
                             " the replica is the baseline)")
    parser.add_argument("--keep-db", metavar="NAME",
                        help="use (and keep) this database; seed it only when it has no tracks")
    parser.add_argument("--labels", type=int, metavar="N",
                        help="then measure everything again with N labels of one labeler the AppView"
                             " subscribes to and obeys (tests/support/bench_labels.py: inserted for"
                             " that pass, deleted afterwards); default 0, with --smoke 200")
    args = parser.parse_args()
    if args.smoke:
        args.tracks, args.artists, args.likes, args.comments, args.plays = 300, 30, 3000, 600, 600
        args.duration, args.warmup, args.connections = 1, 0, 4
        args.requests, args.viewers, args.feed_depth = 400, 4, 4
        args.labels = 200 if args.labels is None else args.labels
    elif not have_wrk():
        sys.exit("wrk is not installed (apt-get install -y wrk); only --smoke runs without it")
    args.labels = args.labels or 0
    pair = start_streaming_pair() if args.replica else None
    try:
        server = pair.primary.url if pair else server_url()
        isolate()
        keep = args.keep_db if not pair else None  # a replica pair is made for this run only
        database = kept_database(server, keep) if keep else ScratchDatabase(server)
        with database as db_url:
            if not keep or not asyncio.run(is_seeded(db_url)):
                asyncio.run(seed_demo(db_url, tracks=args.tracks, artists=args.artists, likes=args.likes,
                                      comments=args.comments, plays=args.plays))
            read_url = ""
            if pair:
                read_url = db_url.replace(f":{pair.primary.port}/", f":{pair.replica.port}/")
                asyncio.run(wait_replayed(db_url, read_url))
            rows = run(db_url, args, read_url)
    finally:
        if pair:
            pair.stop()
    hello = rows[0][1]
    print()
    print(table(rows, hello))
    for line in compare(rows, args, read_url) + compare_labels(rows, args, read_url):
        print(line)
    print(f"\nmicrocache off, coalescing {'off' if args.no_coalesce else 'on'}; load: {hello.tool}, "
          f"one thread, {args.connections} connections, {args.duration:g} s per row")
    if args.labels:
        print(f"rows [{args.labels} labels]: the AppView subscribes to and moderates with {bench_labels.LABELER_DID}"
              f" (PLYR_LABELERS, PLYR_MODERATION_LABELERS); the other rows: no labeler configured")
    print("command:", " ".join([".venv/bin/python", "tests/benchmarks/bench_appview_mix.py", *sys.argv[1:]]))
    # Slow answers are a result, except in --smoke, where nothing may go wrong.
    broken = [name for name, r in rows if r.failed or (args.smoke and r.timeouts)]
    if broken:
        sys.exit(f"failed requests in: {', '.join(broken)}")


if __name__ == "__main__":
    main()
