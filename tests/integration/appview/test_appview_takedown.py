"""Removal: what a moderation labeler labels `!takedown`, `!suspend` or `!hide` is gone from
every view, list and count (appview/labels.py), the track and embed pages answer 410, and the
caches serve it for no longer than their TTL. Negated, expired or other labelers' labels
remove nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from appview.front_door import read_figures
from appview.labels import Moderation
from appview.methods.plays import add_plays
from tests.integration.appview.test_appview_labels import LAB, MOD, SETTINGS, Labels, get

World = Any  # the `world` fixture (conftest.World)
X = "/xrpc/"


async def _platform(client: Any) -> dict[str, Any]:
    return await get(client, "fm.plyr.stats.getPlatformStats")


async def test_a_taken_down_track_is_gone_everywhere(make_client: Any, world: World, pool: asyncpg.Pool) -> None:
    client = await make_client(labels=SETTINGS)
    labels = Labels(pool)
    ann = await world.account("ann")
    fan = await world.account("fan")
    kept = await world.track(ann, "harbor kept", duration=100)
    down = await world.track(ann, "harbor down", duration=60)
    for uri in (kept, down):
        await world.like(fan, uri, when=datetime.now(UTC))
        await world.comment(fan, uri, "nice", 10)
    playlist = await world.playlist(ann, "album", [down, kept], list_type="album")
    async with pool.acquire() as conn, conn.transaction():
        await add_plays(conn, [(down, ann.did, "did:plc:listener", None, None),
                               (kept, ann.did, "did:plc:listener", None, None)])
    page_id = (await get(client, "fm.plyr.feed.getTrack", uri=down))["track"]["id"]
    before = await _platform(client)
    profile_before = (await get(client, "fm.plyr.actor.getProfile", actor=ann.did))["profile"]
    assert (before["tracks"], profile_before["trackCount"], profile_before["playCount"]) == (2, 2, 2)

    # Labels that remove nothing: another labeler's takedown, an expired one, a negated one.
    await labels.put(LAB, down, "!takedown")
    await labels.put(MOD, down, "!hide", exp=datetime.now(UTC) - timedelta(minutes=1))
    await labels.put(MOD, down, "!suspend")
    await labels.negate(MOD, down, "!suspend")
    assert len((await get(client, "fm.plyr.feed.getLatestTracks"))["tracks"]) == 2
    assert (await _platform(client))["tracks"] == 2

    await labels.put(MOD, down, "!takedown")

    async def uris(nsid: str, key: str = "tracks", **params: Any) -> list[str]:
        return [v["uri"] for v in (await get(client, nsid, **params))[key]]

    assert await uris("fm.plyr.feed.getLatestTracks") == [kept]
    assert await uris("fm.plyr.feed.getArtistTracks", actor=ann.handle) == [kept]
    assert await uris("fm.plyr.feed.getTracks", uris=[down, kept]) == [kept]
    await get(client, "fm.plyr.feed.getTrack", 404, uri=down)
    await get(client, "fm.plyr.feed.getTrack", 404, id=page_id)
    assert await uris("fm.plyr.search.searchTracks", q="harbor") == [kept]
    assert await uris("fm.plyr.graph.getList", uri=playlist) == [kept]
    assert await uris("fm.plyr.feed.getActorLikes", actor=fan.did) == [kept]
    assert await uris("fm.plyr.feed.getTopTracks", period="all") == [kept]
    assert await uris("fm.plyr.feed.getTopTracks", period="week") == [kept]
    assert await uris("fm.plyr.feed.getLikes", "likes", uri=down) == []
    assert await uris("fm.plyr.feed.getComments", "comments", uri=down) == []
    assert len(await uris("fm.plyr.feed.getComments", "comments", uri=kept)) == 1
    await get(client, "fm.plyr.stats.getTrackPlays", 404, uri=down)
    rp = "fm.plyr.play.recordPlay"
    resp = await client.post(X + rp, json={"track": down}, headers=fan.auth(rp))
    assert resp.status == 404

    # Counts: the artist's and the platform's, less the removed track (and its plays, seconds).
    profile = (await get(client, "fm.plyr.actor.getProfile", actor=ann.did))["profile"]
    assert (profile["trackCount"], profile["playCount"]) == (1, 1)
    after = await _platform(client)
    assert (after["tracks"], after["artists"], after["plays"]) == (1, 1, 1)
    assert after["totalDurationSeconds"] == before["totalDurationSeconds"] - 60
    artist_plays = await get(client, "fm.plyr.stats.getArtistPlays", actor=ann.did)
    assert artist_plays["total"] == 1 and sum(b["count"] for b in artist_plays["buckets"]) == 1
    figures = await read_figures(pool, Moderation((MOD,)))  # the front door's, the same way
    assert (figures["tracks"].value, figures["plays"].value) == (1, 1)
    # An artist whose every track is removed no longer counts as one.
    cat = await world.account("cat")
    cats = await world.track(cat, "cat's only")
    assert (await _platform(client))["artists"] == 2
    await labels.put(MOD, cats, "!takedown")
    assert (await _platform(client))["artists"] == 1

    # The web: 410 Gone on the track and embed pages, no oEmbed.
    for path in (f"/track/{page_id}", f"/embed/track/{page_id}"):
        resp = await client.get(path)
        assert resp.status == 410 and (await resp.json())["error"] == "Gone", path
    resp = await client.get("/oembed", params={"url": f"http://appview.test/track/{page_id}"})
    assert resp.status == 404

    # Restored by the negation: back everywhere, counts too.
    await labels.negate(MOD, down, "!takedown")
    assert set(await uris("fm.plyr.feed.getLatestTracks")) == {kept, down}
    assert (await _platform(client))["tracks"] == 2  # ann's two; cat's is still down
    assert (await client.get(f"/track/{page_id}")).status == 200


async def test_removed_lists_comments_likes_and_accounts(make_client: Any, world: World,
                                                        pool: asyncpg.Pool) -> None:
    client = await make_client(labels=SETTINGS)
    labels = Labels(pool)
    ann = await world.account("ann")
    bob = await world.account("bob")
    fan = await world.account("fan")
    track = await world.track(ann, "song")
    bobs = await world.track(bob, "bob's song")
    kept_list = await world.playlist(ann, "kept", [track])
    hidden_list = await world.playlist(ann, "hidden", [track])
    like = await world.like(fan, track)
    comment = await world.comment(fan, track, "spam", 5)
    await labels.put(MOD, hidden_list, "!hide")
    await labels.put(MOD, comment, "!takedown")
    await labels.put(MOD, like, "!takedown")
    await get(client, "fm.plyr.graph.getList", 404, uri=hidden_list)
    lists = (await get(client, "fm.plyr.graph.getActorLists", actor=ann.did))["lists"]
    assert [li["uri"] for li in lists] == [kept_list]
    assert (await get(client, "fm.plyr.feed.getComments", uri=track))["comments"] == []
    assert (await get(client, "fm.plyr.feed.getLikes", uri=track))["likes"] == []
    assert (await get(client, "fm.plyr.feed.getActorLikes", actor=fan.did))["tracks"] == []
    totals = await get(client, "fm.plyr.stats.getPlatformStats")
    assert (totals["likes"], totals["comments"]) == (0, 0)

    # An account suspended by a moderation labeler, before the indexer hides it (safety net).
    await labels.put(MOD, bob.did, "!suspend")
    latest = (await get(client, "fm.plyr.feed.getLatestTracks"))["tracks"]
    assert [t["uri"] for t in latest] == [track]
    await get(client, "fm.plyr.feed.getTrack", 404, uri=bobs)
    await get(client, "fm.plyr.actor.getProfile", 404, actor=bob.did)
    await get(client, "fm.plyr.actor.getProfile", 404, actor=bob.handle)
    await get(client, "fm.plyr.feed.getArtistTracks", 404, actor=bob.did)
    actors = (await get(client, "fm.plyr.search.searchActors", q="bob"))["actors"]
    assert bob.did not in {a["did"] for a in actors}
    bob_id = (await pool.fetchval("SELECT short_id FROM tracks WHERE uri = $1", bobs))
    assert (await client.get(f"/track/{bob_id}")).status == 410


async def test_caches_serve_a_takedown_no_longer_than_their_ttl(make_client: Any, world: World,
                                                               pool: asyncpg.Pool) -> None:
    ttl = 0.3
    client = await make_client(labels=SETTINGS, view_cache_seconds=ttl, microcache_seconds=ttl)
    labels = Labels(pool)
    ann = await world.account("ann")
    uri = await world.track(ann, "cached")
    loop = asyncio.get_running_loop()

    async def status() -> int:
        return (await client.get(X + "fm.plyr.feed.getTrack", params={"uri": uri})).status

    async def latest() -> list[Any]:
        return (await get(client, "fm.plyr.feed.getLatestTracks"))["tracks"]

    assert await status() == 200 and len(await latest()) == 1  # both caches hold it now
    await labels.put(MOD, uri, "!takedown")
    taken_at = loop.time()
    while await status() != 404 or await latest():
        # Each cache may serve what it read before the takedown for at most its TTL (plus
        # this loop's own round trips): the view cache's and the microcache's, one after the other.
        assert loop.time() - taken_at < 2 * ttl + 1.0, "a taken-down track outlived the caches' TTL"
        await asyncio.sleep(0.02)
