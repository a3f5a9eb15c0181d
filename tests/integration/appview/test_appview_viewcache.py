"""The track view cache (PLYR_APPVIEW_VIEW_CACHE_SECONDS) and request coalescing: the same
answers as without them, fewer statements, viewer state never shared, changes visible within
the TTL, identical concurrent requests answered by one load."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from tests.integration.appview.test_appview_http import LATEST, CountingPool

World = Any  # the `world` fixture (conftest.World)


def _strip_viewer(tracks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in t.items() if k != "viewer"} for t in tracks]


async def test_cached_views_answer_the_same_with_fewer_statements(
    make_client: Any, world: World, pool: asyncpg.Pool
) -> None:
    counting = CountingPool(pool)
    cached = await make_client(app_pool=counting, view_cache_seconds=60, freshness_interval=3600)
    plain = await make_client()
    ann = await world.account("ann", display_name="Ann")
    fan = await world.account("fan")
    uris = [await world.track(ann, f"tide song {i}") for i in range(30)]
    for uri in uris[:10]:
        await world.like(fan, uri)

    async def pages(client: Any, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        out, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            body = await (await client.get(LATEST, params=params, headers=headers or {})).json()
            out.append(body)
            cursor = body.get("cursor")
            if not cursor:
                return out

    want = await pages(plain)
    assert sum(len(p["tracks"]) for p in want) == 30
    counting.queries.clear()
    assert await pages(cached) == want  # cold: keys + the misses per page
    cold = len(counting.queries)
    counting.queries.clear()
    assert await pages(cached) == want  # warm: the keys alone
    assert len(counting.queries) == len(want) < cold

    # A viewer: the keys plus their likes, the same views, state only in their copy.
    nsid = "fm.plyr.feed.getLatestTracks"
    counting.queries.clear()
    resp = await cached.get(LATEST, params={"limit": 30}, headers=fan.auth(nsid))
    mine = (await resp.json())["tracks"]
    assert resp.headers["Cache-Control"] == "private, no-store"
    assert len(counting.queries) == 2
    assert sum(1 for t in mine if t["viewer"].get("like")) == 10
    anon = (await (await cached.get(LATEST, params={"limit": 30})).json())["tracks"]
    assert all("viewer" not in t for t in anon)
    assert _strip_viewer(mine) == anon

    # Other lists and a single track go through the same cache: no hydration statement.
    counting.queries.clear()
    track = await cached.get("/xrpc/fm.plyr.feed.getTrack", params={"uri": uris[0]})
    assert (await track.json())["track"]["uri"] == uris[0] and counting.queries == []
    counting.queries.clear()
    liked = await cached.get("/xrpc/fm.plyr.feed.getActorLikes", params={"actor": fan.did, "limit": 50})
    assert len((await liked.json())["tracks"]) == 10 and len(counting.queries) == 1


async def test_changes_show_within_the_ttl(make_client: Any, world: World) -> None:
    client = await make_client(view_cache_seconds=0.3)
    ann = await world.account("ann")
    fan = await world.account("fan")
    uri = await world.track(ann, "slow tide")

    async def track() -> tuple[int, dict[str, Any]]:
        resp = await client.get("/xrpc/fm.plyr.feed.getTrack", params={"uri": uri})
        return resp.status, await resp.json()

    assert (await track())[1]["track"]["likeCount"] == 0
    await world.like(fan, uri)
    # Within the TTL the cached view may still say 0; after it, the count is right (read again
    # in the background at half the TTL, or on the first request after it).
    deadline = asyncio.get_running_loop().time() + 0.3 + 1.0
    while (await track())[1]["track"]["likeCount"] != 1:
        assert asyncio.get_running_loop().time() < deadline, "like count never refreshed"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.35)

    await world.hide(ann)
    deadline = asyncio.get_running_loop().time() + 0.3 + 1.0
    while (await track())[0] != 404:
        assert asyncio.get_running_loop().time() < deadline, "a hidden artist's track stayed visible"
        await asyncio.sleep(0.05)
    latest = await (await client.get(LATEST)).json()
    assert latest["tracks"] == []


async def test_identical_concurrent_requests_share_one_load(
    make_client: Any, world: World, pool: asyncpg.Pool
) -> None:
    counting = CountingPool(pool)
    client = await make_client(app_pool=counting, freshness_interval=3600)
    alone = await make_client(app_pool=counting, coalesce=False, freshness_interval=3600)
    ann = await world.account("ann")
    for i in range(5):
        await world.track(ann, f"wave {i}")

    async def burst(c: Any) -> list[Any]:
        counting.queries.clear()
        resps = await asyncio.gather(*(c.get(LATEST, params={"limit": 5}) for _ in range(12)))
        return [await r.read() for r in resps]

    bodies = await burst(client)
    shared = len(counting.queries)
    assert len(set(bodies)) == 1
    separate = await burst(alone)
    assert len(set(separate)) == 1 and separate[0] == bodies[0]
    assert len(counting.queries) == 12  # one statement each without coalescing
    assert shared < 12
    # Sequential requests are never shared: each reads the index afresh.
    counting.queries.clear()
    for _ in range(3):
        await client.get(LATEST, params={"limit": 5})
    assert len(counting.queries) == 3


async def test_concurrent_viewers_share_one_likes_statement(
    make_client: Any, world: World, pool: asyncpg.Pool
) -> None:
    counting = CountingPool(pool)
    client = await make_client(app_pool=counting, view_cache_seconds=60, freshness_interval=3600)
    ann = await world.account("ann")
    fans = [await world.account(f"fan{i}") for i in range(3)]
    uris = [await world.track(ann, f"reef {i}") for i in range(6)]
    expected: dict[str, dict[str, str]] = {}
    for i, fan in enumerate(fans):  # fan i likes the tracks i, i+1 (two each, overlapping)
        expected[fan.did] = {u: await world.like(fan, u) for u in uris[i : i + 2]}
    nsid = "fm.plyr.feed.getLatestTracks"
    await client.get(LATEST)  # warm the views: what is left is the keys and the likes

    counting.queries.clear()
    who = [fans[i % 3] for i in range(12)]
    resps = await asyncio.gather(*(client.get(LATEST, headers=f.auth(nsid)) for f in who))
    for fan, resp in zip(who, resps, strict=True):
        tracks = (await resp.json())["tracks"]
        assert {t["uri"]: t["viewer"]["like"] for t in tracks if t["viewer"].get("like")} == expected[fan.did]
    likes_statements = [q for q in counting.queries if "FROM likes" in q or "JOIN likes" in q]
    assert 1 <= len(likes_statements) < 12
