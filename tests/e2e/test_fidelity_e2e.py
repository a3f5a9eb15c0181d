"""Index fidelity (issue #10) against a real PDS (`@atproto/pds` + PLC on loopback).

Records are written the way any app may write them: createRecord/putRecord with
`validate: false`, so the PDS stores whatever it is given. The rules under test:
- a record our lexicons accept is indexed whole (a 64-bit `duration` included);
- a record key must fit the lexicon's key type (`tid` for tracks, likes, comments and lists,
  `literal:self` for the profile), live, by backfill, by resync and by dead-letter replay;
- when the latest version of a record is invalid, the record is in no view, list or count, as
  if deleted (the invalid version stays in dead_letters); a later valid version brings it back.

Every case is checked through the live indexer (the PDS firehose, run in process) and through
`backfill` into a fresh database: both must dump the same records (uri, cid, value; not rev:
live stores the rev of the commit that wrote each record, backfill only the snapshot's) and hold
the same counts. The drift audit must report the four kinds (missing, extra, stale, invalid) and
`plyr audit --all --repair` must converge, a second audit reporting 0 drift.

The PDS is shared by the test session: each test makes its own accounts and databases, and only
its own DIDs are compared.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from appview.app import build_app
from appview.settings import AppviewSettings
from core import db
from core.settings import CoreSettings
from indexer.backfill.audit import run_audit
from indexer.backfill.http import Politeness
from indexer.backfill.runner import BackfillOptions, open_syncer, run_backfill
from indexer.deadletters import replay_dead_letters
from indexer.records import INDEXED_COLLECTIONS
from indexer.service import run_indexer
from indexer.settings import IndexerSettings
from indexer.sources import RelaySource
from indexer.writer import dump_records
from protocol.identity import IdentityResolver
from protocol.syntax import TidClock
from tests.support.identity import local_resolver

from .pds_client import Account, PdsClient, rkey_of
from .pds_network import PdsNetwork, new_account

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TRACK = "fm.plyr.track"
LIKE = "fm.plyr.like"
COMMENT = "fm.plyr.comment"
LIST = "fm.plyr.list"
PROFILE = "fm.plyr.actor.profile"
RULES = Politeness(concurrency=4, per_host=4, retries=2, backoff_base=0.2)
# Generous: these are safety nets on a loaded machine; every wait polls for progress.
CATCH_UP_S = 120.0
BIG_DURATION = 3_000_000_000  # > 2**31: valid (the lexicon bounds it below only)
BAD_BIO = "a" * 257  # 257 bytes but 257 graphemes: over the profile's maxGraphemes of 256
BAD_LIST_NAME = "n" * 65  # over the list's maxGraphemes of 64

Ref = tuple[str, str]  # (uri, cid) as the PDS answers a write
Records = dict[str, tuple[str, Any]]  # uri -> (cid, value)


# ---- records as an app writes them ---------------------------------------------------------------


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def track(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": title,
        "artist": "E2E",
        "fileType": "mp3",
        "audioUrl": "https://cdn.example.com/a.mp3",
        "createdAt": now(),
        **extra,
    }


def strong_ref(ref: Ref) -> dict[str, str]:
    return {"uri": ref[0], "cid": ref[1]}


def like(subject: Ref, created_at: str | None = None) -> dict[str, Any]:
    return {"subject": strong_ref(subject), "createdAt": created_at or now()}


def comment(subject: Ref, text: str) -> dict[str, Any]:
    return {"subject": strong_ref(subject), "text": text, "timestampMs": 1500, "createdAt": now()}


def playlist(name: str, items: Iterable[Ref], list_type: str = "playlist") -> dict[str, Any]:
    return {
        "name": name,
        "listType": list_type,
        "items": [{"subject": strong_ref(i)} for i in items],
        "createdAt": now(),
    }


def profile(bio: str) -> dict[str, Any]:
    return {"bio": bio, "createdAt": now()}


def profile_uri(account: Account) -> str:
    return f"at://{account.did}/{PROFILE}/self"


# ---- waiting on progress -------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float) -> Any:
    """Poll `check` until it is truthy; `within` is only a bound for a stuck run."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while loop.time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def caught_up(pool: asyncpg.Pool, pds: PdsClient, accounts: list[Account]) -> bool:
    """The index has applied each account's latest commit: its repo_rev is the PDS's head
    (kept also for commits whose only records were refused)."""
    for account in accounts:
        head = (await pds.get_latest_commit(account.did))["rev"]
        stored = await pool.fetchval("SELECT repo_rev FROM actors WHERE did = $1", account.did)
        if stored is None or stored < head:
            return False
    return True


# ---- databases, the live indexer, the AppView ----------------------------------------------------


@dataclasses.dataclass
class Db:
    url: str
    pool: asyncpg.Pool


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@pytest.fixture
async def make_db(
    pg_server_url: str, pg_template: str
) -> AsyncIterator[Callable[[], Awaitable[Db]]]:
    """Fresh migrated databases (clones of the session's template), dropped after the test:
    one for the live indexer and one per backfill compared with it."""
    made: list[tuple[str, asyncpg.Pool]] = []

    async def factory() -> Db:
        name = f"plyr_t_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(pg_server_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        finally:
            await admin.close()
        url = _with_database(pg_server_url, name)
        pool = await db.create_pool(url, CoreSettings.from_env(), min_size=1, max_size=5)
        made.append((name, pool))
        return Db(url, pool)

    yield factory
    admin = await asyncpg.connect(pg_server_url)
    try:
        for name, pool in made:
            await pool.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def resolver(pds_network: PdsNetwork) -> AsyncIterator[IdentityResolver]:
    r = local_resolver(pds_network.plc_url)
    yield r
    await r.close()


@pytest.fixture
async def start_live(
    pds_network: PdsNetwork, resolver: IdentityResolver, pds_identity_env: dict[str, str]
) -> AsyncIterator[Callable[[Db], Awaitable[None]]]:
    """start_live(db): the indexer on the PDS firehose (signatures checked), in this process,
    from the live tip; returns once connected, so the accounts made next are all seen."""
    tasks: list[asyncio.Task[None]] = []

    async def start(target: Db) -> None:
        source = RelaySource(pds_network.firehose_url)
        settings = dataclasses.replace(
            IndexerSettings.from_env(), batch_delay=0.05, metrics_port=0, batch_size=200
        )
        task = asyncio.create_task(
            run_indexer(target.url, target.pool, settings, source, verify=True, resolver=resolver)
        )
        tasks.append(task)
        connected = asyncio.create_task(source.connected.wait())
        done, _ = await asyncio.wait(
            {task, connected}, timeout=60, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # raises what stopped the indexer
        assert connected in done, "the live indexer did not connect to the firehose"

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class AppView:
    """XRPC reads through the AppView's aiohttp app (responses checked against the lexicons)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def call(self, nsid: str, **params: Any) -> tuple[int, Any]:
        query = [
            (k, str(x)) for k, v in params.items() for x in (v if isinstance(v, list) else [v])
        ]
        async with self.client.get(f"/xrpc/{nsid}", params=query) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, nsid: str, **params: Any) -> dict[str, Any]:
        status, body = await self.call(nsid, **params)
        assert status == 200, (nsid, params, status, body)
        return body

    async def not_found(self, nsid: str, **params: Any) -> None:
        status, body = await self.call(nsid, **params)
        assert (status, body.get("error")) == (404, "NotFound"), (nsid, params, status, body)

    async def track(self, uri: str) -> dict[str, Any]:
        return (await self.ok("fm.plyr.feed.getTrack", uri=uri))["track"]

    async def counts(self, uri: str) -> tuple[int, int]:
        view = await self.track(uri)
        return view["likeCount"], view["commentCount"]

    async def tracks(self, uris: list[str]) -> list[str]:
        return [t["uri"] for t in (await self.ok("fm.plyr.feed.getTracks", uris=uris))["tracks"]]

    async def artist_tracks(self, did: str) -> set[str]:
        body = await self.ok("fm.plyr.feed.getArtistTracks", actor=did)
        return {t["uri"] for t in body["tracks"]}

    async def list_tracks(self, uri: str) -> list[str]:
        return [t["uri"] for t in (await self.ok("fm.plyr.graph.getList", uri=uri))["tracks"]]

    async def actor_lists(self, did: str) -> set[str]:
        body = await self.ok("fm.plyr.graph.getActorLists", actor=did)
        return {li["uri"] for li in body["lists"]}

    async def profile(self, did: str) -> dict[str, Any]:
        return (await self.ok("fm.plyr.actor.getProfile", actor=did))["profile"]

    async def likes(self, uri: str) -> list[str]:
        return [x["uri"] for x in (await self.ok("fm.plyr.feed.getLikes", uri=uri))["likes"]]

    async def comments(self, uri: str) -> list[str]:
        body = await self.ok("fm.plyr.feed.getComments", uri=uri)
        return [x["uri"] for x in body["comments"]]


@pytest.fixture
async def appview(resolver: IdentityResolver) -> AsyncIterator[Callable[[Db], Awaitable[AppView]]]:
    """appview(db): the AppView on that database, caches off (reads follow the index at once)."""
    clients: list[TestClient] = []
    settings = AppviewSettings(
        host="127.0.0.1", port=0, public_url="http://appview.test",
        service_did="did:web:appview.test", cors_origins=(), max_body_bytes=64 * 1024,
        microcache_seconds=0, top_cache_seconds=0, stats_cache_seconds=0,
        freshness_interval=0.05, play_dedupe_seconds=1800, public_max_age=0,
        view_cache_seconds=0, coalesce=False,
    )  # fmt: skip

    async def factory(target: Db) -> AppView:
        app = build_app(target.pool, settings, resolver=resolver, check_output=True)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return AppView(client)

    yield factory
    for client in clients:
        await client.close()


# ---- truth, dumps, counts ------------------------------------------------------------------------


async def served(pds: PdsClient, accounts: list[Account]) -> Records:
    """Every indexed-collection record the PDS serves for these accounts (listRecords)."""
    out: Records = {}
    for account in accounts:
        for collection in INDEXED_COLLECTIONS:
            for ref in await pds.list_records(account.did, collection):
                out[ref.uri] = (ref.cid, ref.value)
    return out


async def expected_index(pds: PdsClient, accounts: list[Account], refused: set[str]) -> Records:
    """What the index must hold: everything served except what our lexicons refuse."""
    truth = await served(pds, accounts)
    assert refused <= set(truth), f"not served by the PDS: {refused - set(truth)}"
    return {uri: v for uri, v in truth.items() if uri not in refused}


def _ours(rows: Iterable[dict[str, Any]], dids: set[str]) -> Records:
    out: Records = {}
    for row in rows:
        if row["uri"].split("/")[2] in dids:
            assert row["uri"] not in out, f"{row['uri']} dumped twice"
            out[row["uri"]] = (row["cid"], row["value"])  # rev left out on purpose (see top)
    return out


async def dumped(target: Db, accounts: list[Account]) -> Records:
    """`records dump` (the function the command prints) for these accounts, without rev."""
    return _ours([r async for r in dump_records(target.pool)], {a.did for a in accounts})


async def plyr(target: Db, net: PdsNetwork, *args: str) -> tuple[int, str, str]:
    """Run the `plyr` command line on a database, as an operator does."""
    env = {
        **os.environ,
        **net.identity_env(),
        "DATABASE_URL": target.url,
        "PLYR_LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def dumped_by_cli(target: Db, net: PdsNetwork, accounts: list[Account]) -> Records:
    code, out, err = await plyr(target, net, "records", "dump")
    assert code == 0, err[-2000:]
    rows = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    return _ours(rows, {a.did for a in accounts})


async def counts(target: Db, accounts: list[Account]) -> dict[str, tuple[int, int]]:
    """track_counts (likes, comments) of the subjects these accounts publish, zeros left out."""
    rows = await target.pool.fetch(
        """SELECT subject_uri, like_count, comment_count FROM track_counts
           WHERE split_part(subject_uri, '/', 3) = ANY($1::text[])""",
        [a.did for a in accounts],
    )
    return {
        r["subject_uri"]: (r["like_count"], r["comment_count"])
        for r in rows
        if (r["like_count"], r["comment_count"]) != (0, 0)
    }


async def backfill(
    target: Db, accounts: list[Account], resolver: IdentityResolver, *, force: bool = False
) -> None:
    summary = await run_backfill(
        target.pool,
        BackfillOptions(dids=[a.did for a in accounts], force=force, politeness=RULES),
        resolver=resolver,
    )
    assert summary.done == len(accounts) and not summary.failures, summary.failures


async def dead_letters(target: Db, accounts: list[Account]) -> set[Ref]:
    rows = await target.pool.fetch(
        "SELECT uri, cid FROM dead_letters WHERE did = ANY($1::text[])", [a.did for a in accounts]
    )
    return {(r["uri"], r["cid"]) for r in rows}


async def same_live_and_backfill(
    live: Db, fresh: Db, accounts: list[Account], expected: Records
) -> None:
    """The live index equals what the PDS serves minus what we refuse, and a backfill gives
    the same records and counts."""
    live_dump = await dumped(live, accounts)
    assert live_dump == expected, _diff(live_dump, expected)
    backfilled = await dumped(fresh, accounts)
    assert backfilled == live_dump, _diff(backfilled, live_dump)
    assert await counts(fresh, accounts) == await counts(live, accounts)


def _diff(got: Records, want: Records) -> str:
    return (
        f"extra {sorted(set(got) - set(want))}, missing {sorted(set(want) - set(got))}, "
        f"different {sorted(u for u in set(got) & set(want) if got[u] != want[u])}"
    )


# ---- the tests -------------------------------------------------------------------------------------


async def test_issue_cases_and_record_keys_live_and_backfill(
    pds: PdsClient,
    pds_network: PdsNetwork,
    make_db: Callable[[], Awaitable[Db]],
    start_live: Callable[[Db], Awaitable[None]],
    appview: Callable[[Db], Awaitable[AppView]],
    resolver: IdentityResolver,
) -> None:
    live = await make_db()
    await start_live(live)
    artist = await new_account(pds, pds_network, "fidart")
    fan = await new_account(pds, pds_network, "fidfan")
    everyone = [artist, fan]

    # 1. A valid record beyond 32 bits, at a TID key we chose ourselves (tid: valid key).
    long = await pds.create_record(
        artist, TRACK, track("Long", duration=BIG_DURATION), rkey=TidClock().next()
    )
    plain = await pds.create_record(artist, TRACK, track("Plain"))  # a TID the PDS chose
    # 2. Valid records at keys their lexicons refuse: not a TID, not `self`.
    odd_track = await pds.create_record(artist, TRACK, track("Odd"), rkey="my-favourite-track")
    album = await pds.create_record(
        artist, LIST, playlist("Album", [long, plain, odd_track], "album")
    )
    odd_list = await pds.create_record(artist, LIST, playlist("Odd", [plain]), rkey="my-playlist")
    await pds.put_record(artist, PROFILE, "self", profile("hi"))
    odd_profile = await pds.put_record(artist, PROFILE, "other", profile("not my profile"))
    await pds.create_record(fan, LIKE, like(long))
    await pds.create_record(fan, COMMENT, comment(long, "so long"))
    odd_like = await pds.create_record(fan, LIKE, like(plain), rkey="my-like")
    odd_comment = await pds.create_record(fan, COMMENT, comment(plain, "odd"), rkey="my-comment")
    # 3. Valid records updated to invalid ones (empty title; 257-grapheme bio).
    doomed = await pds.create_record(artist, TRACK, track("Doomed"))
    await pds.create_record(fan, LIKE, like(doomed))
    doomed_bad = await pds.put_record(artist, TRACK, rkey_of(doomed[0]), track(""))
    profile_bad = await pds.put_record(artist, PROFILE, "self", profile(BAD_BIO))
    await eventually(lambda: caught_up(live.pool, pds, everyone), "the live index", CATCH_UP_S)

    view = await appview(live)
    # 1: indexed whole, in every view and in its album.
    long_view = await view.track(long[0])
    assert long_view["duration"] == BIG_DURATION
    assert (long_view["likeCount"], long_view["commentCount"]) == (1, 1)
    assert await view.list_tracks(album[0]) == [long[0], plain[0]]
    assert await view.artist_tracks(artist.did) == {long[0], plain[0]}
    # 2: the wrongly keyed records are nowhere, their likes and comments count nothing.
    await view.not_found("fm.plyr.feed.getTrack", uri=odd_track[0])
    await view.not_found("fm.plyr.graph.getList", uri=odd_list[0])
    assert await view.actor_lists(artist.did) == {album[0]}
    assert await view.counts(plain[0]) == (0, 0)
    assert await view.likes(plain[0]) == [] and await view.comments(plain[0]) == []
    # 3: the records whose latest version is invalid are gone, as if deleted.
    await view.not_found("fm.plyr.feed.getTrack", uri=doomed[0])
    art = await view.profile(artist.did)
    assert "bio" not in art, art  # neither the old `self` nor the one at `other`
    assert (art["trackCount"], art["listCount"]) == (2, 1)
    assert (await view.profile(fan.did))["likeCount"] == 2  # of long and doomed; not my-like
    # The invalid versions and the wrongly keyed records are kept as dead letters.
    letters = await dead_letters(live, everyone)
    assert {doomed_bad, profile_bad} <= letters
    refused_keys = {odd_track, odd_list, odd_profile, odd_like, odd_comment}
    assert {u for u, _ in refused_keys} <= {u for u, _ in letters}
    assert long[0] not in {u for u, _ in letters}

    refused = {u for u, _ in refused_keys} | {doomed[0], profile_uri(artist)}
    expected = await expected_index(pds, everyone, refused)
    assert await counts(live, everyone) == {long[0]: (1, 1), doomed[0]: (1, 0)}

    # The same repos by backfill into a fresh database: the same `records dump` and counts.
    fresh = await make_db()
    await backfill(fresh, everyone, resolver)
    await same_live_and_backfill(live, fresh, everyone, expected)
    assert await dumped_by_cli(fresh, pds_network, everyone) == await dumped_by_cli(
        live, pds_network, everyone
    )
    assert (await (await appview(fresh)).track(long[0]))["duration"] == BIG_DURATION

    # Replaying the dead letters applies none of them: keys and values are checked again.
    await replay_dead_letters(live.pool, verify=True, resolver=resolver)
    assert await dumped(live, everyone) == expected


async def test_valid_invalid_valid_in_every_collection(
    pds: PdsClient,
    pds_network: PdsNetwork,
    make_db: Callable[[], Awaitable[Db]],
    start_live: Callable[[Db], Awaitable[None]],
    appview: Callable[[Db], Awaitable[AppView]],
    resolver: IdentityResolver,
) -> None:
    live = await make_db()
    await start_live(live)
    artist = await new_account(pds, pds_network, "flipart")
    fan = await new_account(pds, pds_network, "flipfan")
    everyone = [artist, fan]

    one = await pds.create_record(artist, TRACK, track("One"))
    two = await pds.create_record(artist, TRACK, track("Two"))
    keep = await pds.create_record(artist, LIST, playlist("Keep", [one, two]))
    flip = await pds.create_record(artist, LIST, playlist("Flip", [two]))
    await pds.put_record(artist, PROFILE, "self", profile("hello"))
    like_one = await pds.create_record(fan, LIKE, like(one))
    comment_one = await pds.create_record(fan, COMMENT, comment(one, "nice"))
    like_two = await pds.create_record(fan, LIKE, like(two))
    comment_two = await pds.create_record(fan, COMMENT, comment(two, "also nice"))
    await eventually(lambda: caught_up(live.pool, pds, everyone), "the live index", CATCH_UP_S)

    view = await appview(live)

    async def all_valid(title: str, bio: str, flip_items: list[str]) -> None:
        assert (await view.track(one[0]))["title"] == title
        assert await view.counts(one[0]) == (1, 1)
        assert await view.counts(two[0]) == (1, 1)
        assert await view.likes(two[0]) == [like_two[0]]
        assert await view.comments(two[0]) == [comment_two[0]]
        assert await view.artist_tracks(artist.did) == {one[0], two[0]}
        assert await view.list_tracks(keep[0]) == [one[0], two[0]]
        assert await view.list_tracks(flip[0]) == flip_items
        assert await view.actor_lists(artist.did) == {keep[0], flip[0]}
        art = await view.profile(artist.did)
        assert (art.get("bio"), art["trackCount"], art["listCount"]) == (bio, 2, 2)
        assert (await view.profile(fan.did))["likeCount"] == 2

    await all_valid("One", "hello", [two[0]])

    # valid -> invalid, in every collection at once.
    await pds.put_record(artist, TRACK, rkey_of(one[0]), track(""))
    await pds.put_record(fan, LIKE, rkey_of(like_two[0]), like(two, created_at="yesterday"))
    await pds.put_record(fan, COMMENT, rkey_of(comment_two[0]), comment(two, ""))
    await pds.put_record(artist, LIST, rkey_of(flip[0]), playlist(BAD_LIST_NAME, [two]))
    await pds.put_record(artist, PROFILE, "self", profile(BAD_BIO))
    await eventually(lambda: caught_up(live.pool, pds, everyone), "the live index", CATCH_UP_S)

    await view.not_found("fm.plyr.feed.getTrack", uri=one[0])
    assert await view.tracks([one[0], two[0]]) == [two[0]]
    assert await view.artist_tracks(artist.did) == {two[0]}
    assert await view.list_tracks(keep[0]) == [two[0]]  # a list holding the invalid track
    await view.not_found("fm.plyr.graph.getList", uri=flip[0])
    assert await view.actor_lists(artist.did) == {keep[0]}
    # The like and comment on `two` went invalid: its counts and lists follow.
    assert await view.counts(two[0]) == (0, 0)
    assert await view.likes(two[0]) == [] and await view.comments(two[0]) == []
    art = await view.profile(artist.did)
    assert ("bio" in art, art["trackCount"], art["listCount"]) == (False, 1, 1)
    assert (await view.profile(fan.did))["likeCount"] == 1
    refused = {one[0], like_two[0], comment_two[0], flip[0], profile_uri(artist)}
    # `one` is hidden, not its likers' records: its counts are kept for when it comes back.
    assert await counts(live, everyone) == {one[0]: (1, 1)}
    fresh = await make_db()
    await backfill(fresh, everyone, resolver)
    await same_live_and_backfill(
        live, fresh, everyone, await expected_index(pds, everyone, refused)
    )

    # invalid -> valid again: everything comes back, with the new versions.
    await pds.put_record(artist, TRACK, rkey_of(one[0]), track("One again"))
    await pds.put_record(fan, LIKE, rkey_of(like_two[0]), like(two))
    await pds.put_record(fan, COMMENT, rkey_of(comment_two[0]), comment(two, "back"))
    await pds.put_record(artist, LIST, rkey_of(flip[0]), playlist("Flip", [two, one]))
    await pds.put_record(artist, PROFILE, "self", profile("hello again"))
    await eventually(lambda: caught_up(live.pool, pds, everyone), "the live index", CATCH_UP_S)

    await all_valid("One again", "hello again", [two[0], one[0]])
    assert await view.likes(one[0]) == [like_one[0]]
    assert await view.comments(one[0]) == [comment_one[0]]
    # The backfilled database catches up the same way (force: its repos are done already).
    await backfill(fresh, everyone, resolver, force=True)
    await same_live_and_backfill(live, fresh, everyone, await expected_index(pds, everyone, set()))
    assert await counts(live, everyone) == {one[0]: (1, 1), two[0]: (1, 1)}


async def test_audit_reports_four_kinds_and_repair_converges(
    pds: PdsClient,
    pds_network: PdsNetwork,
    make_db: Callable[[], Awaitable[Db]],
    resolver: IdentityResolver,
) -> None:
    target = await make_db()
    owner = await new_account(pds, pds_network, "fidaudit")
    mine = [owner]
    one = await pds.create_record(owner, TRACK, track("One"))
    two = await pds.create_record(owner, TRACK, track("Two"))
    three = await pds.create_record(owner, TRACK, track("Three"))
    long = await pds.create_record(owner, TRACK, track("Long", duration=BIG_DURATION))
    broken = await pds.create_record(owner, TRACK, track(""))  # invalid from the start
    odd = await pds.create_record(owner, TRACK, track("Odd"), rkey="my-favourite-track")
    await pds.create_record(owner, LIKE, like(one))
    await pds.create_record(owner, COMMENT, comment(one, "mine"))
    await pds.put_record(owner, PROFILE, "self", profile("hi"))

    await backfill(target, mine, resolver)
    expected = await expected_index(pds, mine, {broken[0], odd[0]})
    assert await dumped(target, mine) == expected
    async with open_syncer(target.pool, politeness=RULES, resolver=resolver) as syncer:
        # No drift: the 64-bit track is indexed, not excused as a dead letter; what is invalid
        # there and absent here is no drift either.
        clean = await run_audit(syncer, [owner.did])
        assert not clean.drifted and not clean.failed, clean.lines()

        # Drift: the PDS changes while nothing follows its firehose into this database.
        four = await pds.create_record(owner, TRACK, track("Four"))  # missing
        await pds.put_record(owner, TRACK, rkey_of(broken[0]), track("Fixed"))  # missing
        await pds.delete_record(owner, TRACK, rkey_of(three[0]))  # extra
        await pds.put_record(owner, TRACK, rkey_of(two[0]), track("Two (edit)"))  # stale
        await pds.put_record(owner, TRACK, rkey_of(one[0]), track(""))  # invalid
        await pds.put_record(owner, PROFILE, "self", profile(BAD_BIO))  # invalid

        report = await run_audit(syncer, [owner.did])
        assert not report.failed, report.lines()
        (repo,) = report.repos
        assert repo.missing == sorted([four[0], broken[0]]), report.lines()
        assert repo.extra == [three[0]], report.lines()
        assert repo.stale == [two[0]], report.lines()
        assert repo.invalid == sorted([one[0], profile_uri(owner)]), report.lines()
        assert report.total("invalid") == 2

    # The operator's commands: --repair converges all four kinds, a second audit finds nothing.
    code, out, err = await plyr(target, pds_network, "audit", "--all", "--repair")
    assert code == 0, out + err[-3000:]
    code, out, err = await plyr(target, pds_network, "audit", "--all")
    assert code == 0, out + err[-3000:]
    assert "1 repo(s) checked, 0 drifted" in out, out
    expected = await expected_index(pds, mine, {odd[0], one[0], profile_uri(owner)})
    assert await dumped(target, mine) == expected
    assert long[0] in expected
    # `one` is hidden, its like and comment are not: they still count for it.
    assert await counts(target, mine) == {one[0]: (1, 1)}
