"""Bad input, HTTP behaviour (ETag, CORS, gzip, freshness), query counts, web pages, OpenAPI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import brotli
import orjson
from aiohttp.test_utils import TestClient

World = Any  # the `world` fixture (conftest.World)
LATEST = "/xrpc/fm.plyr.feed.getLatestTracks"


async def expect_error(resp: Any, status: int, error: str | None = None) -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    assert set(body) == {"error", "message"} and body["message"], body
    if error:
        assert body["error"] == error, body
    return body


async def test_bad_input_is_a_4xx_xrpc_error(client: TestClient, world: World) -> None:
    ann = await world.account("ann")
    await world.track(ann, "x")
    bad_params = [
        (LATEST, {"limit": "0"}),
        (LATEST, {"limit": "101"}),
        (LATEST, {"limit": "ten"}),
        (LATEST, {"limit": "1e3"}),
        (LATEST, {"limit": ["1", "2"]}),
        (LATEST, {"cursor": "garbage!"}),
        (LATEST, {"cursor": "WzEsMiwzXQ"}),  # valid base64 JSON, wrong shape
        (LATEST, {"artist": "not-a-did"}),
        ("/xrpc/fm.plyr.feed.getTrack", {"uri": "https://example.com/x"}),
        ("/xrpc/fm.plyr.feed.getTrack", {"id": "-4"}),
        ("/xrpc/fm.plyr.feed.getTrack", {"id": "99999999999999999999"}),
        ("/xrpc/fm.plyr.feed.getTrack", {"id": "9007199254740992"}),
        ("/xrpc/fm.plyr.feed.getLikes", {}),
        ("/xrpc/fm.plyr.feed.getComments", {"uri": "at://did:plc:x/y/z", "cursor": "WzFd"}),
        ("/xrpc/fm.plyr.feed.getTopTracks", {"period": "year"}),
        ("/xrpc/fm.plyr.feed.getTopTracks", {"period": "week", "cursor": "WzEsOTk5OTk5XQ"}),
        ("/xrpc/fm.plyr.feed.getTracks", {"uris": ["at://did:plc:aaa/fm.plyr.track/1"] * 51}),
        ("/xrpc/fm.plyr.actor.getProfile", {"actor": "no spaces allowed"}),
        ("/xrpc/fm.plyr.search.searchTracks", {"q": ""}),
        ("/xrpc/fm.plyr.search.searchTracks", {"q": "x" * 201}),
        ("/xrpc/fm.plyr.stats.getTrackPlays", {"uri": "at://did:plc:aaa/fm.plyr.track/1", "days": "0"}),
        ("/xrpc/fm.plyr.search.searchTracks", {"q": "a\x00b"}),
        ("/xrpc/fm.plyr.search.searchActors", {"q": "\x00"}),
        ("/xrpc/fm.plyr.actor.getProfile", {"actor": "a\x00.test"}),
    ]
    for path, params in bad_params:
        await expect_error(await client.get(path, params=params), 400, "InvalidRequest")

    await expect_error(await client.get("/xrpc/fm.plyr.feed.nope"), 404, "MethodNotImplemented")
    await expect_error(await client.get("/xrpc/not an nsid"), 404, "MethodNotImplemented")
    await expect_error(await client.post(LATEST, json={}), 405)
    resp = await client.put(LATEST)
    assert "GET" in resp.headers.get("Allow", "")
    await expect_error(resp, 405)
    await expect_error(await client.get("/xrpc/fm.plyr.play.recordPlay"), 405)
    play = "/xrpc/fm.plyr.play.recordPlay"
    as_json = {"Content-Type": "application/json", **ann.auth("fm.plyr.play.recordPlay")}
    await expect_error(await client.post(play, data=b"x" * 20_000, headers=as_json), 413)
    await expect_error(await client.post(play, data=b"{not json", headers=as_json), 400)
    await expect_error(await client.post(play, data=b"[]", headers=as_json), 400)
    await expect_error(await client.post(play, data=b'{"track": 5}', headers=as_json), 400)
    await expect_error(await client.post(play, data=b"{}", headers={**as_json, "Content-Type": "text/plain"}), 400)
    # an anonymous caller's body is not even read
    await expect_error(await client.post(play, data=b"x" * 20_000, headers={"Content-Type": "application/json"}), 401)
    await expect_error(await client.get("/no/such/page"), 404)


async def test_etag_cache_control_and_304(client: TestClient, world: World) -> None:
    ann = await world.account("ann")
    await world.track(ann, "x")
    resp = await client.get(LATEST)
    assert resp.status == 200
    etag = resp.headers["ETag"]
    assert "public" in resp.headers["Cache-Control"] and "max-age=5" in resp.headers["Cache-Control"]
    again = await client.get(LATEST, headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag
    assert await again.read() == b""
    await world.track(ann, "y")
    changed = await client.get(LATEST, headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["ETag"] != etag

    nsid = "fm.plyr.feed.getLatestTracks"
    private = await client.get(LATEST, headers=ann.auth(nsid))
    assert private.status == 200
    assert private.headers["Cache-Control"] == "private, no-store" and "ETag" not in private.headers


async def test_freshness_header_on_every_xrpc_response(client: TestClient, world: World, pool: asyncpg.Pool) -> None:
    import asyncio

    resp = await client.get(LATEST)
    assert resp.headers["Plyr-Index-Event-Time"] == "none" and resp.headers["Plyr-Index-Lag"] == "unknown"
    event_time = datetime.now(UTC) - timedelta(seconds=30)
    await pool.execute("INSERT INTO cursors (source, seq, event_time) VALUES ('relay', 42, $1)", event_time)
    await asyncio.sleep(0.3)  # the background refresh runs every 50 ms in tests
    for resp in (await client.get(LATEST), await client.get("/xrpc/fm.plyr.feed.getTrack")):
        assert resp.headers["Plyr-Index-Event-Time"].startswith(event_time.strftime("%Y-%m-%dT%H:%M:%S"))
        assert 29 <= float(resp.headers["Plyr-Index-Lag"]) < 60


async def test_cors_allow_list(client: TestClient, make_client: Any) -> None:
    ok = await client.get(LATEST, headers={"Origin": "https://plyr.test"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://plyr.test"
    assert ok.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in ok.headers["Vary"]
    evil = await client.get(LATEST, headers={"Origin": "https://evil.test"})
    assert "Access-Control-Allow-Origin" not in evil.headers
    pre = await client.options(LATEST, headers={"Origin": "https://plyr.test",
                                                "Access-Control-Request-Method": "GET",
                                                "Access-Control-Request-Headers": "authorization"})
    assert pre.status == 204 and "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    denied = await client.options(LATEST, headers={"Origin": "https://evil.test",
                                                   "Access-Control-Request-Method": "GET"})
    assert denied.status == 403
    anyone = await make_client(cors_origins=("*",))
    resp = await anyone.get(LATEST, headers={"Origin": "https://evil.test"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers  # never * with credentials


async def test_large_json_is_gzipped(client: TestClient, world: World) -> None:
    ann = await world.account("ann")
    for i in range(20):
        await world.track(ann, f"song number {i}", description="liner notes " * 20)
    resp = await client.get(LATEST, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.headers.get("Content-Encoding") == "gzip"
    small = await client.get("/xrpc/fm.plyr.stats.getPlatformStats", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers

    plain = await client.get(LATEST)
    expected = await plain.json()
    resp = await client.get(LATEST, headers={"Accept-Encoding": "gzip, br"}, auto_decompress=False)
    assert resp.headers.get("Content-Encoding") == "br"
    assert orjson.loads(brotli.decompress(await resp.read())) == expected
    refused = await client.get(LATEST, headers={"Accept-Encoding": "br;q=0, gzip"}, auto_decompress=False)
    assert refused.headers.get("Content-Encoding") == "gzip"


class CountingPool:
    """The pool the app sees, counting the statements each request sends."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.queries: list[str] = []

    def _count(self, sql: str) -> None:
        if "FROM cursors" not in sql:  # the freshness refresher, not a request
            self.queries.append(sql)

    async def fetch(self, sql: str, *args: Any) -> Any:
        self._count(sql)
        return await self._pool.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self._count(sql)
        return await self._pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self._count(sql)
        return await self._pool.fetchval(sql, *args)


async def test_a_page_costs_a_fixed_number_of_queries(make_client: Any, world: World, pool: asyncpg.Pool) -> None:
    counting = CountingPool(pool)
    client = await make_client(app_pool=counting, freshness_interval=3600)
    ann = await world.account("ann")
    fan = await world.account("fan")
    uris = [await world.track(ann, f"harbor song {i}") for i in range(60)]
    for uri in uris[:30]:
        await world.like(fan, uri)
    nsid = "fm.plyr.feed.getLatestTracks"
    counts = {}
    for limit in (5, 50):
        for who, headers in (("anon", {}), ("viewer", fan.auth(nsid))):
            counting.queries.clear()
            resp = await client.get(LATEST, params={"limit": limit}, headers=headers)
            assert len((await resp.json())["tracks"]) == limit
            counts[(limit, who)] = len(counting.queries)
    # latest: one statement reads and hydrates the page; the viewer's likes are one more
    assert counts[(5, "anon")] == counts[(50, "anon")] == 1
    assert counts[(5, "viewer")] == counts[(50, "viewer")] == 2
    # skeleton + batched hydration (+ viewer likes): the same count for 5 or 30 items
    for path, params in (("fm.plyr.feed.getActorLikes", {"actor": fan.did}),
                         ("fm.plyr.feed.getTopTracks", {"period": "all"}),
                         ("fm.plyr.search.searchTracks", {"q": "harbor song"})):
        seen = set()
        for limit in (5, 30):
            counting.queries.clear()
            resp = await client.get("/xrpc/" + path, params={**params, "limit": limit}, headers=fan.auth(path))
            assert len((await resp.json())["tracks"]) == limit, path
            seen.add(len(counting.queries))
        assert len(seen) == 1 and seen.pop() <= 4, path


async def test_oembed_track_page_and_embed(client: TestClient, world: World) -> None:
    ann = await world.account("ann", display_name="Ann & Co")
    uri = await world.track(ann, "Night <Drive>", imageUrl="https://cdn.plyr.test/c.jpg", duration=200)
    track = (await (await client.get("/xrpc/fm.plyr.feed.getTrack", params={"uri": uri})).json())["track"]
    page_url = f"http://appview.test/track/{track['id']}"

    resp = await client.get("/oembed", params={"url": page_url, "maxwidth": "300", "maxheight": "400"})
    body = await resp.json()
    assert resp.status == 200 and body["version"] == "1.0" and body["type"] == "rich"
    assert body["width"] == 300 and body["height"] == 160 and body["title"] == "Night <Drive>"
    assert f'src="http://appview.test/embed/track/{track["id"]}"' in body["html"]
    assert 'width="300"' in body["html"] and body["author_name"] == "Ann & Co"
    assert body["thumbnail_url"] == "https://cdn.plyr.test/c.jpg"
    assert (await (await client.get("/oembed", params={"url": page_url})).json())["width"] == 480

    await expect_error(await client.get("/oembed", params={"url": page_url, "format": "xml"}), 501)
    await expect_error(await client.get("/oembed", params={"url": "https://youtube.com/track/1"}), 404)
    await expect_error(await client.get("/oembed", params={"url": "http://appview.test/track/999999"}), 404)
    await expect_error(await client.get("/oembed", params={"url": "http://appview.test/about"}), 404)
    await expect_error(await client.get("/oembed", params={"url": page_url, "maxwidth": "wide"}), 400)
    await expect_error(await client.get("/oembed"), 400)

    html = await (await client.get(f"/track/{track['id']}")).text()
    assert '<meta property="og:title" content="Night &lt;Drive&gt;">' in html
    assert '<meta name="twitter:card" content="player">' in html
    assert f'<meta name="twitter:player" content="http://appview.test/embed/track/{track["id"]}">' in html
    assert '<meta property="og:audio" content="https://cdn.plyr.test/' in html
    assert '<meta property="og:image" content="https://cdn.plyr.test/c.jpg">' in html
    link = re.search(r'<link rel="alternate" type="application/json\+oembed" href="([^"]+)"', html)
    assert link and link.group(1).startswith("http://appview.test/oembed?url=http%3A%2F%2Fappview.test%2Ftrack%2F")
    assert "<Drive>" not in html  # escaped

    embed = await client.get(f"/embed/track/{track['id']}")
    text = await embed.text()
    assert embed.status == 200 and "frame-ancestors *" in embed.headers["Content-Security-Policy"]
    assert '<audio id="audio" controls preload="metadata" src="https://cdn.plyr.test/' in text
    assert "Night &lt;Drive&gt;" in text and "Ann &amp; Co" in text
    etag = embed.headers["ETag"]
    assert (await client.get(f"/embed/track/{track['id']}", headers={"If-None-Match": etag})).status == 304
    for bad in ("0", "abc", "99999999", "1" * 40):
        await expect_error(await client.get(f"/track/{bad}"), 404)
        await expect_error(await client.get(f"/embed/track/{bad}"), 404)
    await world.hide(ann)
    await expect_error(await client.get(f"/track/{track['id']}"), 404)


async def test_openapi_health_and_metrics(client: TestClient) -> None:
    from appview.app import ROUTES

    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    for nsid in ROUTES:
        assert f"/xrpc/{nsid}" in spec["paths"]
    latest = spec["paths"]["/xrpc/fm.plyr.feed.getLatestTracks"]["get"]
    limit = next(p for p in latest["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 50,
                               "description": "Page size."}
    assert "fm.plyr.defs.trackView" in spec["components"]["schemas"]
    # Labels: label objects in views, labelers negotiated by header on every query.
    track_view = spec["components"]["schemas"]["fm.plyr.defs.trackView"]
    assert track_view["properties"]["labels"]["items"] == {"$ref": "#/components/schemas/com.atproto.label.defs.label"}
    assert spec["components"]["schemas"]["com.atproto.label.defs.label"]["required"] == ["src", "uri", "val", "cts"]
    accept = next(p for p in latest["parameters"] if p["name"] == "atproto-accept-labelers")
    assert accept["in"] == "header" and not accept["required"]
    assert "atproto-content-labelers" in latest["responses"]["200"]["headers"]
    put = spec["paths"]["/xrpc/fm.plyr.viewer.putPreferences"]["post"]
    assert all(p["in"] != "header" for p in put.get("parameters", []))
    health = await client.get("/health")
    assert health.status == 200 and (await health.json())["status"] == "ok"
    await client.get(LATEST)
    metrics = await (await client.get("/metrics")).text()
    assert 'plyr_appview_xrpc_requests_total{method="fm.plyr.feed.getLatestTracks",status="200"}' in metrics


async def test_microcache_never_mixes_viewers(make_client: Any, world: World) -> None:
    client = await make_client(microcache_seconds=30)
    ann = await world.account("ann")
    fan = await world.account("fan")
    uri = await world.track(ann, "tune")
    like = await world.like(fan, uri)
    nsid = "fm.plyr.feed.getLatestTracks"
    anon = await (await client.get(LATEST)).json()
    assert "viewer" not in anon["tracks"][0]
    mine = await client.get(LATEST, headers=fan.auth(nsid))
    assert (await mine.json())["tracks"][0]["viewer"] == {"like": like}
    assert mine.headers["Cache-Control"] == "private, no-store"
    theirs = await (await client.get(LATEST, headers=ann.auth(nsid))).json()
    assert theirs["tracks"][0]["viewer"] == {}
    again = await (await client.get(LATEST)).json()
    assert again == anon  # the shared cached answer was not touched by the overlays
    # a new like shows at once for its author, even while the public page is cached
    other = await world.account("other")
    other_like = await world.like(other, uri)
    fresh = await (await client.get(LATEST, headers=other.auth(nsid))).json()
    assert fresh["tracks"][0]["viewer"] == {"like": other_like}
    # a bad token is refused even when a cached public answer exists
    assert (await client.get(LATEST, headers={"Authorization": "Bearer a.b.c"})).status == 401
