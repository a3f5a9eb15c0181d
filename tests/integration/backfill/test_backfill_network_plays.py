"""Backfill and resync of a listener's repo: its network plays (teal.fm records) are indexed,
matched and counted like live ones, and a play gone from the repo is deleted with its count."""

from __future__ import annotations

import random

import asyncpg

from indexer.backfill.runner import BackfillOptions, run_backfill
from tests.integration.backfill.conftest import FAST
from tests.integration.backfill.fake_network import FakeNetwork, random_did
from tests.support.repo_builder import build_repo, post, tid, track


def play(i: int) -> dict[str, object]:
    return {"$type": "fm.teal.alpha.feed.play", "trackName": f"Track {i}", "artists": [{"artistName": "Someone"}]}


async def test_backfilled_plays_are_matched_and_resync_deletes_gone_ones(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    artist = build_repo(random_did(), [("fm.plyr.track", tid(1), track(1))], rev=tid(10_000_000))
    rng = random.Random(2)
    posts = [("app.bsky.feed.post", tid(5000 + i), post(i, rng)) for i in range(30)]
    listener_did = random_did()
    first = build_repo(
        listener_did,
        [("fm.teal.alpha.feed.play", tid(100), play(1)), ("fm.teal.feed.play", tid(101), play(1) | {"$type": "fm.teal.feed.play"}), *posts],
        rev=tid(10_000_000),
    )
    net.host(artist)
    net.host(first)
    await run_backfill(pool, BackfillOptions(dids=[artist.did, listener_did], politeness=FAST), resolver=resolver)
    track_uri = f"at://{artist.did}/fm.plyr.track/{tid(1)}"
    rows = await pool.fetch("SELECT collection, track_uri, match_method FROM network_plays ORDER BY collection")
    assert [tuple(r) for r in rows] == [
        ("fm.teal.alpha.feed.play", track_uri, "metadata"),
        ("fm.teal.feed.play", track_uri, "metadata"),
    ]
    assert await pool.fetchval("SELECT play_count FROM network_play_counts WHERE track_uri = $1", track_uri) == 2

    # The listener deleted one play; a resync (forced backfill) removes it and its count.
    second = build_repo(listener_did, [("fm.teal.feed.play", tid(101), play(1) | {"$type": "fm.teal.feed.play"}), *posts],
                        key=first.key, rev=tid(10_000_100))
    net.host(second)
    await run_backfill(pool, BackfillOptions(dids=[listener_did], force=True, politeness=FAST), resolver=resolver)
    assert await pool.fetchval("SELECT count(*) FROM network_plays") == 1
    assert await pool.fetchval("SELECT play_count FROM network_play_counts WHERE track_uri = $1", track_uri) == 1
    assert await pool.fetchval(
        "SELECT rev FROM tombstones WHERE uri = $1", f"at://{listener_did}/fm.teal.alpha.feed.play/{tid(100)}"
    ) == second.rev
