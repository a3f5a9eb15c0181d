"""Feeds, track views, likes, comments, lists, profiles and search over a real index."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

World = Any  # the `world` fixture (conftest.World)

X = "/xrpc/"


async def get(client: TestClient, nsid: str, status: int = 200, headers: dict[str, str] | None = None,
              **params: Any) -> dict[str, Any]:
    resp = await client.get(X + nsid, params=params, headers=headers or {})
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_latest_feed_pages_through_everything_newest_first(client: TestClient, world: World) -> None:
    ann = await world.account("ann", display_name="Ann A", avatar="https://cdn.plyr.test/ann.jpg")
    bob = await world.account("bob")
    uris = []
    for i in range(7):
        uris.append(await world.track(ann if i % 2 else bob, f"song {i}", minutes=i))
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    pages = 0
    while True:
        body = await get(client, "fm.plyr.feed.getLatestTracks", **params)
        seen += [t["uri"] for t in body["tracks"]]
        pages += 1
        if "cursor" not in body:
            break
        params["cursor"] = body["cursor"]
    assert seen == list(reversed(uris))
    assert pages == 3

    only_ann = await get(client, "fm.plyr.feed.getLatestTracks", artist=ann.did)
    assert [t["uri"] for t in only_ann["tracks"]] == [uris[5], uris[3], uris[1]]
    by_handle = await get(client, "fm.plyr.feed.getArtistTracks", actor=ann.handle)
    assert by_handle["tracks"] == only_ann["tracks"]


async def test_track_view_carries_artist_media_counts_and_viewer_like(client: TestClient, world: World) -> None:
    ann = await world.account("ann", display_name="Ann A", avatar="https://cdn.plyr.test/ann.jpg")
    fan = await world.account("fan")
    other = await world.account("other")
    uri = await world.track(ann, "Night Drive", duration=215, imageUrl="https://cdn.plyr.test/c.jpg",
                            album="Roads", labels={"$type": "com.atproto.label.defs#selfLabels",
                                                    "values": [{"val": "explicit"}]})
    like_uri = await world.like(fan, uri)
    await world.like(other, uri)
    await world.comment(fan, uri, "nice", 1000)

    body = await get(client, "fm.plyr.feed.getTrack", uri=uri)
    t = body["track"]
    assert t["title"] == "Night Drive" and t["album"] == "Roads" and t["duration"] == 215
    assert t["author"] == {"did": ann.did, "handle": ann.handle, "displayName": "Ann A",
                           "avatar": "https://cdn.plyr.test/ann.jpg", "labels": []}
    assert t["audioUrl"].endswith(".mp3") and t["imageUrl"] == "https://cdn.plyr.test/c.jpg"
    assert (t["likeCount"], t["commentCount"], t["playCount"]) == (2, 1, 0)
    # Self labels as com.atproto.label.defs#label objects: the artist's, on this version.
    assert t["labels"] == [{"ver": 1, "src": ann.did, "uri": uri, "cid": t["cid"], "val": "explicit",
                            "cts": "2026-01-01T00:01:00Z"}]
    assert t["createdAt"].startswith("2026-01-01T") and t["indexedAt"]
    assert "viewer" not in t

    nsid = "fm.plyr.feed.getTrack"
    mine = await get(client, nsid, headers=fan.auth(nsid), uri=uri)
    assert mine["track"]["viewer"] == {"like": like_uri}
    ann_view = await get(client, nsid, headers=ann.auth(nsid), uri=uri)
    assert ann_view["track"]["viewer"] == {}

    by_id = await get(client, nsid, id=t["id"])
    assert by_id["track"]["uri"] == uri
    await get(client, nsid, status=404, uri=f"at://{ann.did}/fm.plyr.track/3aaaaaaaaaaaa")
    await get(client, nsid, status=400)

    several = await get(client, "fm.plyr.feed.getTracks", uris=[uri, f"at://{ann.did}/fm.plyr.track/3zzz"])
    assert [x["uri"] for x in several["tracks"]] == [uri]


async def test_hidden_actors_are_excluded_everywhere(client: TestClient, world: World) -> None:
    ann = await world.account("ann")
    ghost = await world.account("ghost")
    visible = await world.track(ann, "visible")
    hidden = await world.track(ghost, "hidden")
    await world.like(ghost, visible)
    await world.like(ann, visible)
    await world.comment(ghost, visible, "boo", 5)
    await world.like(ann, hidden)
    await world.hide(ghost)

    latest = await get(client, "fm.plyr.feed.getLatestTracks")
    assert [t["uri"] for t in latest["tracks"]] == [visible]
    await get(client, "fm.plyr.feed.getTrack", status=404, uri=hidden)
    assert (await get(client, "fm.plyr.feed.getTracks", uris=[hidden, visible]))["tracks"][0]["uri"] == visible
    likes = await get(client, "fm.plyr.feed.getLikes", uri=visible)
    assert [x["actor"]["did"] for x in likes["likes"]] == [ann.did]
    assert (await get(client, "fm.plyr.feed.getComments", uri=visible))["comments"] == []
    assert (await get(client, "fm.plyr.feed.getLikes", uri=hidden))["likes"] == []
    await get(client, "fm.plyr.actor.getProfile", status=404, actor=ghost.did)
    await get(client, "fm.plyr.actor.getProfile", status=404, actor=ghost.handle)
    # A DID is not looked up before the page: a hidden artist's empty page is still a 404.
    await get(client, "fm.plyr.feed.getArtistTracks", status=404, actor=ghost.did)
    await get(client, "fm.plyr.feed.getArtistTracks", status=404, actor=ghost.handle)
    await get(client, "fm.plyr.feed.getActorLikes", status=404, actor=ghost.did)
    assert (await get(client, "fm.plyr.feed.getActorLikes", actor=ann.did))["tracks"] == [
        (await get(client, "fm.plyr.feed.getTrack", uri=visible))["track"]
    ]
    assert (await get(client, "fm.plyr.search.searchTracks", q="hidden"))["tracks"] == []
    assert (await get(client, "fm.plyr.search.searchActors", q="ghost"))["actors"] == []
    # counts exclude the hidden liker (the writer keeps track_counts that way)
    assert (await get(client, "fm.plyr.feed.getTrack", uri=visible))["track"]["likeCount"] == 1
    top = await get(client, "fm.plyr.feed.getTopTracks", period="all")
    assert [t["uri"] for t in top["tracks"]] == [visible]


async def test_top_tracks_by_period(client: TestClient, world: World) -> None:
    from datetime import UTC, datetime, timedelta

    ann = await world.account("ann")
    fans = [await world.account(f"fan{i}") for i in range(4)]
    old_hit = await world.track(ann, "old hit")
    new_hit = await world.track(ann, "new hit")
    now = datetime.now(UTC)
    for fan in fans:  # four likes long ago
        await world.like(fan, old_hit, when=now - timedelta(days=60))
    for fan in fans[:2]:  # two likes today
        await world.like(fan, new_hit, when=now - timedelta(hours=1))
    await world.like(fans[3], old_hit, when=now - timedelta(days=3))

    assert [t["uri"] for t in (await get(client, "fm.plyr.feed.getTopTracks", period="all"))["tracks"]] == [old_hit, new_hit]
    assert [t["uri"] for t in (await get(client, "fm.plyr.feed.getTopTracks", period="day"))["tracks"]] == [new_hit]
    week = await get(client, "fm.plyr.feed.getTopTracks", period="week")
    assert [t["uri"] for t in week["tracks"]] == [new_hit, old_hit]
    first = await get(client, "fm.plyr.feed.getTopTracks", period="week", limit=1)
    assert [t["uri"] for t in first["tracks"]] == [new_hit]
    second = await get(client, "fm.plyr.feed.getTopTracks", period="week", limit=1, cursor=first["cursor"])
    assert [t["uri"] for t in second["tracks"]] == [old_hit] and "cursor" not in second
    p1 = await get(client, "fm.plyr.feed.getTopTracks", period="all", limit=1)
    p2 = await get(client, "fm.plyr.feed.getTopTracks", period="all", limit=1, cursor=p1["cursor"])
    assert [t["uri"] for t in p2["tracks"]] == [new_hit]


async def test_likes_actor_likes_and_timed_comments(client: TestClient, world: World) -> None:
    ann = await world.account("ann")
    fans = [await world.account(f"fan{i}") for i in range(3)]
    t1 = await world.track(ann, "one")
    t2 = await world.track(ann, "two")
    like_uris = [await world.like(f, t1, minutes=i) for i, f in enumerate(fans)]
    await world.like(fans[0], t2, minutes=10)
    page = await get(client, "fm.plyr.feed.getLikes", uri=t1, limit=2)
    rest = await get(client, "fm.plyr.feed.getLikes", uri=t1, limit=2, cursor=page["cursor"])
    assert [x["uri"] for x in page["likes"] + rest["likes"]] == list(reversed(like_uris))
    assert page["likes"][0]["actor"]["handle"] == fans[2].handle

    liked = await get(client, "fm.plyr.feed.getActorLikes", actor=fans[0].handle)
    assert [t["uri"] for t in liked["tracks"]] == [t2, t1]

    c_late = await world.comment(fans[1], t1, "late", 90_000)
    c_early = await world.comment(fans[2], t1, "early", 1_000)
    c_mid = await world.comment(fans[0], t1, "mid", 30_000)
    first = await get(client, "fm.plyr.feed.getComments", uri=t1, limit=2)
    second = await get(client, "fm.plyr.feed.getComments", uri=t1, limit=2, cursor=first["cursor"])
    got = first["comments"] + second["comments"]
    assert [c["uri"] for c in got] == [c_early, c_mid, c_late]
    assert [c["timestampMs"] for c in got] == [1_000, 30_000, 90_000]
    assert got[0]["author"]["did"] == fans[2].did and got[0]["text"] == "early"


async def test_profile_lists_and_search(client: TestClient, world: World) -> None:
    ann = await world.account("ann", display_name="Annabel Lee")
    fan = await world.account("fan")
    tracks = [await world.track(ann, title) for title in ("Harbor Lights", "Glass Rivers", "Static Dreams")]
    await world.like(fan, tracks[0])
    await world.like(ann, tracks[1])
    album = await world.playlist(ann, "Debut", [tracks[2], tracks[0], tracks[1]], "album")

    prof = (await get(client, "fm.plyr.actor.getProfile", actor=ann.handle))["profile"]
    assert prof["did"] == ann.did and prof["displayName"] == "Annabel Lee" and prof["bio"] == "bio of ann"
    assert (prof["trackCount"], prof["listCount"], prof["likeCount"]) == (3, 1, 1)
    await get(client, "fm.plyr.actor.getProfile", status=404, actor="nobody.plyr.test")

    body = await get(client, "fm.plyr.graph.getList", uri=album, limit=2)
    assert body["list"]["name"] == "Debut" and body["list"]["listType"] == "album"
    assert body["list"]["itemCount"] == 3
    more = await get(client, "fm.plyr.graph.getList", uri=album, limit=2, cursor=body["cursor"])
    from appview import cursor as cursors

    for bad in (2**40, -5):
        await get(client, "fm.plyr.graph.getList", status=400, uri=album, cursor=cursors.encode(bad))
    far = cursors.encode(2**61)
    await get(client, "fm.plyr.feed.getComments", uri=tracks[0], cursor=cursors.encode(2**61, "x"))
    await get(client, "fm.plyr.feed.getTopTracks", period="all", cursor=cursors.encode(2**61, "x"))
    await get(client, "fm.plyr.feed.getTopTracks", status=400, period="week", cursor=far)
    await get(client, "fm.plyr.search.searchTracks", status=400, q="x", cursor=far)
    assert [t["uri"] for t in body["tracks"] + more["tracks"]] == [tracks[2], tracks[0], tracks[1]]
    lists = await get(client, "fm.plyr.graph.getActorLists", actor=ann.did)
    assert [x["uri"] for x in lists["lists"]] == [album]
    await get(client, "fm.plyr.graph.getList", status=404, uri=f"at://{ann.did}/fm.plyr.list/3aaaaaaaaaaaa")

    found = await get(client, "fm.plyr.search.searchTracks", q="harbor light")
    assert found["tracks"][0]["uri"] == tracks[0]
    assert (await get(client, "fm.plyr.search.searchTracks", q="zzzqqq"))["tracks"] == []
    actors = await get(client, "fm.plyr.search.searchActors", q="annabel")
    assert actors["actors"][0]["did"] == ann.did
    # LIKE wildcards in the query are literal
    assert (await get(client, "fm.plyr.search.searchTracks", q="%_%"))["tracks"] == []


async def test_pagination_matches_an_oracle_with_ties_and_hidden_artists(client: TestClient, world: World) -> None:
    import random

    rng = random.Random(5)
    artists = [await world.account(f"artist{i}") for i in range(4)]
    made: list[tuple[float, str, str]] = []  # (minutes, uri, did)
    for i in range(40):
        who = rng.choice(artists)
        minutes = float(rng.randint(0, 6))  # many tracks share a timestamp: the uri breaks ties
        made.append((minutes, await world.track(who, f"track {i}", minutes=minutes), who.did))
    await world.hide(artists[1])
    visible = {u for _m, u, d in made if d != artists[1].did}
    # the order of one unpaginated read (ties by uri follow the database's collation)
    expected = [r["uri"] for r in await world.pool.fetch(
        "SELECT uri FROM tracks WHERE uri = ANY($1::text[]) ORDER BY sort_at DESC, uri DESC", list(visible))]
    minutes = {u: m for m, u, _d in made}
    assert [minutes[u] for u in expected] == sorted((minutes[u] for u in visible), reverse=True)

    for _ in range(3):
        seen: list[str] = []
        params: dict[str, Any] = {}
        while True:
            params["limit"] = rng.randint(1, 9)
            body = await get(client, "fm.plyr.feed.getLatestTracks", **params)
            seen += [t["uri"] for t in body["tracks"]]
            if "cursor" not in body:
                break
            params["cursor"] = body["cursor"]
        assert seen == expected
