"""Issue #11, AppView and service auth: what a hostile probe found, one regression test per
finding. Each test drives the mechanism the way the probe did and checks the fixed behaviour."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from appview.app import build_app
from appview.auth import SERVICE_FRAGMENT, Authenticator
from appview.errors import XRPCError
from appview.urls import servable_url, servable_url_sql
from core import db
from core.settings import CoreSettings
from protocol.crypto import PrivateKey
from protocol.service_auth import AuthError, IssuerGate, create_service_jwt, verify_service_jwt
from tests.integration.appview import conftest as appview_fixtures
from tests.integration.appview.conftest import SERVICE_DID, AppFactory, Plc, World, appview_settings
from tests.support.identity import FakeResolver, local_resolver

# The AppView test fixtures (a PLC stand-in, the index writer, app clients), by name for pytest.
plc = appview_fixtures.plc
world = appview_fixtures.world
make_client = appview_fixtures.make_client

PUT_PREFS = "fm.plyr.viewer.putPreferences"
GET_PREFS = "fm.plyr.viewer.getPreferences"
PUT_QUEUE = "fm.plyr.viewer.putQueue"


def _nest(depth: int, leaf: Any, *, key: str = "k") -> Any:
    """`leaf` under `depth` levels of objects and arrays (alternating)."""
    value = leaf
    for level in range(depth):
        value = {key: value} if level % 2 else [value]
    return value


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, dict | list) and value:
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
        depth += 1
    return depth


# --- 1. deeply nested viewer state -------------------------------------------------------


async def test_deeply_nested_viewer_state(world: World, make_client: AppFactory) -> None:
    fan = await world.account("fan")
    client = await make_client(max_body_bytes=512 * 1024)

    async def put(nsid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        resp = await client.post(f"/xrpc/{nsid}", data=orjson.dumps(body),
                                 headers={**fan.auth(nsid), "Content-Type": "application/json"})
        return resp.status, await resp.json()

    # A NUL below depth 64, as a value and as a key: refused at the door, not a 500 from jsonb.
    for prefs in ({"theme": "dark", "x": _nest(70, "a\x00b")},
                  {"x": _nest(70, {"k\x00": 1})}):
        status, body = await put(PUT_PREFS, {"preferences": prefs, "revision": 0})
        assert (status, body["error"]) == (400, "InvalidRequest"), body
    status, body = await put(PUT_QUEUE, {"queue": {"items": [], "extra": _nest(80, "\x00")}, "revision": 0})
    assert (status, body["error"]) == (400, "InvalidRequest"), body

    # Depth 253 used to be stored, after which every read of it was a 500: refused, saying why.
    status, body = await put(PUT_PREFS, {"preferences": {"x": _nest(252, 1)}, "revision": 0})
    assert (status, body["error"]) == (400, "InvalidRequest"), body
    assert "deep" in body["message"]
    # Just over the depth limit, without any NUL: refused too.
    status, body = await put(PUT_PREFS, {"preferences": {"x": _nest(40, 1)}, "revision": 0})
    assert status == 400 and "deep" in body["message"], body

    # Size: a body under the HTTP limit but too big to keep as viewer state.
    status, body = await put(PUT_PREFS, {"preferences": {"blob": "x" * 300_000}, "revision": 0})
    assert status == 400 and "large" in body["message"], body

    # Ordinary nesting still works and reads back.
    nested = {"theme": "dark", "layout": _nest(20, "ok")}
    status, body = await put(PUT_PREFS, {"preferences": nested, "revision": 0})
    assert status == 200 and body == {"revision": 1}, body
    resp = await client.get(f"/xrpc/{GET_PREFS}", headers=fan.auth(GET_PREFS))
    assert resp.status == 200 and (await resp.json())["preferences"] == nested

    # A value stored before the limit existed can still be read (and then replaced).
    await world.pool.execute("UPDATE viewer_state SET value = $2 WHERE did = $1 AND kind = 'preferences'",
                             fan.did, {"x": _nest(252, 1)})
    resp = await client.get(f"/xrpc/{GET_PREFS}", headers=fan.auth(GET_PREFS))
    assert resp.status == 200, await resp.text()
    got = await resp.json()
    assert got["revision"] == 1 and _depth(got["preferences"]) < 32
    status, body = await put(PUT_PREFS, {"preferences": {"theme": "light"}, "revision": 1})
    assert (status, body) == (200, {"revision": 2})


# --- 2. a database that goes away ----------------------------------------------------------


async def test_database_that_goes_away(pg_server_url: str, database_url: str, plc: Plc) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    parts = urlsplit(pg_server_url)
    # The embedded server is reached by a socket folder given in the query (?host=...), not a
    # host name: that folder is a secret too, and an absent part is no secret at all.
    socket_dirs = [v for k, v in parse_qsl(parts.query) if k == "host"]
    secrets_in_url = {name, parts.hostname or "", str(parts.port or 5432), *socket_dirs} - {""}
    pool = await db.create_pool(database_url, CoreSettings.from_env(), min_size=1, max_size=3)
    resolver = local_resolver(plc.url)
    fan = plc.register("fan")
    client = TestClient(TestServer(build_app(pool, appview_settings(), resolver=resolver), host="127.0.0.1"))
    await client.start_server()
    try:
        assert (await client.get("/xrpc/fm.plyr.feed.getLatestTracks")).status == 200
        assert (await client.get("/health")).status == 200

        async def probe(when: str, *, recovers: bool) -> list[int]:
            """Every kind of request: a 503 + Retry-After that names nothing, or (only when the
            database is still there and the pool reconnects) a 200."""
            requests: list[tuple[str, str, dict[str, str]]] = [
                ("GET", "/xrpc/fm.plyr.feed.getLatestTracks", {}),
                ("GET", "/xrpc/fm.plyr.feed.getLatestTracks?limit=3", {}),
                ("GET", f"/xrpc/fm.plyr.actor.getProfile?actor={fan.did}", {}),
                ("GET", "/xrpc/fm.plyr.viewer.getQueue", fan.auth("fm.plyr.viewer.getQueue")),
                ("GET", "/xrpc/fm.plyr.feed.getLatestTracks", fan.auth("fm.plyr.feed.getLatestTracks")),
                ("POST", "/xrpc/fm.plyr.viewer.putQueue", fan.auth("fm.plyr.viewer.putQueue")),
                ("GET", "/track/1", {}),
                ("GET", "/embed/track/1", {}),
                ("GET", "/oembed?url=" + quote("http://appview.test/track/1"), {}),
                ("GET", "/health", {}),
            ]
            statuses = []
            for verb, path, headers in requests:
                body_json = {"queue": {"items": []}, "revision": 0} if verb == "POST" else None
                resp = await client.request(verb, path, headers=headers, json=body_json)
                text = await resp.text()
                statuses.append(resp.status)
                if recovers and resp.status in (200, 404):
                    continue
                assert resp.status == 503, (when, path, resp.status, text)
                assert resp.headers.get("Retry-After", "").isdigit(), (when, path)
                body = orjson.loads(text)
                if path == "/health":
                    assert body == {"status": "unavailable"}, body
                else:
                    assert body["error"] == "ServiceUnavailable" and body["message"], body
                for secret in secrets_in_url:
                    assert secret not in text, (when, path, secret, text)
            return statuses

        admin = await asyncpg.connect(pg_server_url)
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            # The pool's connections die under it: a request that meets a dead one gets a 503
            # (never a 500); the pool reconnects and the rest are served.
            assert set(await probe("terminated", recovers=True)) <= {200, 404, 503}
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            assert set(await probe("dropped", recovers=False)) == {503}
        finally:
            await admin.close()
        await pool.close()
        assert set(await probe("closed pool", recovers=False)) == {503}
    finally:
        await client.close()
        await resolver.close()
        pool.terminate()


# --- 3. web pages: CSP, nosniff, only http(s) media URLs -----------------------------------

_HOSTILE_URLS = ("javascript:alert(document.domain)", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
                 "JaVaScRiPt:alert(1)", "vbscript:msgbox(1)")


async def test_web_pages_csp_nosniff_and_http_urls_only(world: World, make_client: AppFactory) -> None:
    client = await make_client()
    mallory = await world.account("mallory", display_name="Mallory", avatar=_HOSTILE_URLS[0])
    bad_uri = await world.track(mallory, "Bad Track", imageUrl=_HOSTILE_URLS[0], audioUrl=_HOSTILE_URLS[1])
    bad_uri2 = await world.track(mallory, "Bad Two", imageUrl=_HOSTILE_URLS[2], audioUrl=_HOSTILE_URLS[3])
    ann = await world.account("ann", avatar="https://cdn.plyr.test/ann.png")
    good_uri = await world.track(ann, "Good Track", imageUrl="https://cdn.plyr.test/c.png",
                                 audioUrl="https://cdn.plyr.test/a.mp3")
    await world.like(ann, bad_uri)
    ids = {uri: await world.pool.fetchval("SELECT short_id FROM tracks WHERE uri = $1", uri)
           for uri in (bad_uri, bad_uri2, good_uri)}

    def clean(text: str) -> None:
        lowered = text.lower()
        for marker in ("javascript:", "data:text", "vbscript:"):
            assert marker not in lowered, text

    for uri in (bad_uri, bad_uri2):
        page = await client.get(f"/track/{ids[uri]}")
        assert page.status == 200
        html = await page.text()
        clean(html)
        assert "og:image" not in html and "<img" not in html and "<audio" not in html
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "img-src" in csp and "media-src" in csp and "style-src" in csp
        assert "frame-ancestors 'none'" in csp or "frame-ancestors 'self'" in csp
        assert page.headers["X-Content-Type-Options"] == "nosniff"

        embed = await client.get(f"/embed/track/{ids[uri]}")
        clean(await embed.text())
        csp = embed.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors *" in csp and "media-src" in csp
        assert embed.headers["X-Content-Type-Options"] == "nosniff"

        oembed = await client.get("/oembed", params={"url": f"http://appview.test/track/{ids[uri]}"})
        body = await oembed.json()
        assert "thumbnail_url" not in body and oembed.headers["X-Content-Type-Options"] == "nosniff"

        view = (await (await client.get("/xrpc/fm.plyr.feed.getTrack", params={"uri": uri})).json())["track"]
        assert "imageUrl" not in view and "audioUrl" not in view and "avatar" not in view["author"], view

    # Every XRPC view that carries a record's URL.
    for path, params in (("fm.plyr.feed.getLatestTracks", {}), ("fm.plyr.feed.getArtistTracks", {"actor": mallory.did}),
                         ("fm.plyr.actor.getProfile", {"actor": mallory.did}),
                         ("fm.plyr.search.searchActors", {"q": "mallory"}),
                         ("fm.plyr.feed.getLikes", {"uri": bad_uri})):
        resp = await client.get(f"/xrpc/{path}", params=params)
        assert resp.status == 200, (path, await resp.text())
        clean(await resp.text())
    resp = await client.get("/xrpc/fm.plyr.feed.getLatestTracks", headers=mallory.auth("fm.plyr.feed.getLatestTracks"))
    clean(await resp.text())

    # http(s) URLs are still served, in views and on pages.
    view = (await (await client.get("/xrpc/fm.plyr.feed.getTrack", params={"uri": good_uri})).json())["track"]
    assert view["imageUrl"] == "https://cdn.plyr.test/c.png" and view["audioUrl"] == "https://cdn.plyr.test/a.mp3"
    assert view["author"]["avatar"] == "https://cdn.plyr.test/ann.png"
    html = await (await client.get(f"/track/{ids[good_uri]}")).text()
    assert 'content="https://cdn.plyr.test/c.png"' in html and 'src="https://cdn.plyr.test/a.mp3"' in html
    oembed = await (await client.get("/oembed", params={"url": f"http://appview.test/track/{ids[good_uri]}"})).json()
    assert oembed["thumbnail_url"] == "https://cdn.plyr.test/c.png"

    # The rule is one pattern, applied in Python (pages) and in SQL (views): they agree.
    servable = ("https://a.test/x", "HTTP://A.TEST", "hTtPs://a.test/Q", "https://a.test/é?q=1#f",
                "http://127.0.0.1:8080/t.mp3")
    refused = (*_HOSTILE_URLS, "https://", "https://a b", " https://a.test", "https://a.test/\n",
               "https://a.test\n", "ftp://a.test", "//a.test/x", "https:a.test", "")
    for url in servable + refused:
        in_sql = await world.pool.fetchval(f"SELECT {servable_url_sql('$1::text')}", url)
        assert in_sql == servable_url(url) == (url if url in servable else None), url

    # nosniff on every response, JSON and errors included.
    for path in ("/health", "/openapi.json", "/xrpc/fm.plyr.feed.getLatestTracks", "/xrpc/no.such.method", "/track/999"):
        resp = await client.get(path)
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", path


# --- 4. CORS: Vary: Origin on every response whose CORS headers depend on Origin ------------


def _vary(headers: Any) -> list[str]:
    return [v.strip().lower() for value in headers.getall("Vary", []) for v in value.split(",") if v.strip()]


async def test_cors_vary_origin_without_origin(world: World, make_client: AppFactory) -> None:
    ann = await world.account("ann")
    for n in range(12):  # a latest page above the compression threshold
        await world.track(ann, f"Track number {n} with a longer title to make the page bigger")
    short_id = await world.pool.fetchval("SELECT min(short_id) FROM tracks")
    for origins in (("https://plyr.test",), ("*",), ("https://plyr.test", "*")):
        client = await make_client(cors_origins=origins)
        cases: list[tuple[str, str, dict[str, str]]] = [
            ("GET", "/xrpc/fm.plyr.feed.getLatestTracks", {}),
            ("GET", "/xrpc/fm.plyr.feed.getLatestTracks", {"Accept-Encoding": "gzip"}),
            ("GET", "/xrpc/fm.plyr.feed.getLatestTracks", {"Accept-Encoding": "br"}),
            ("GET", "/xrpc/fm.plyr.feed.getLatestTracks", ann.auth("fm.plyr.feed.getLatestTracks")),
            ("GET", "/xrpc/no.such.method", {}),
            ("GET", f"/track/{short_id}", {}),
            ("GET", "/health", {}),
            ("POST", "/xrpc/fm.plyr.feed.getLatestTracks", {}),
        ]
        for origin in (None, "https://plyr.test", "https://evil.test"):
            for verb, path, headers in cases:
                sent = {**headers, **({"Origin": origin} if origin else {})}
                resp = await client.request(verb, path, headers=sent)
                vary = _vary(resp.headers)
                assert vary.count("origin") == 1, (origins, origin, verb, path, resp.headers.getall("Vary", []))
                if path.startswith("/xrpc/fm.plyr.feed") and verb == "GET" and "Authorization" not in headers:
                    assert "authorization" in vary and "accept-encoding" in vary, vary
            etag = (await client.get("/xrpc/fm.plyr.feed.getLatestTracks")).headers["ETag"]
            sent = {"If-None-Match": etag, **({"Origin": origin} if origin else {})}
            resp = await client.get("/xrpc/fm.plyr.feed.getLatestTracks", headers=sent)
            assert resp.status == 304 and _vary(resp.headers).count("origin") == 1
        preflight = await client.options("/xrpc/fm.plyr.feed.getLatestTracks", headers={
            "Origin": "https://evil.test", "Access-Control-Request-Method": "GET"})
        assert "origin" in _vary(preflight.headers)


# --- 5. service auth: token lifetime, cache TTL, unknown issuers --------------------------

AUD = SERVICE_DID + SERVICE_FRAGMENT
LXM = "fm.plyr.viewer.getQueue"


def _random_plc() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "did:plc:" + "".join(secrets.choice(alphabet) for _ in range(24))


def _request(token: str) -> Any:
    return make_mocked_request("GET", f"/xrpc/{LXM}", headers={"Authorization": "Bearer " + token})


async def test_service_auth_lifetime_cache_and_unknown_issuers() -> None:
    resolver = FakeResolver()
    did = _random_plc()
    key = PrivateKey.generate("k256")
    resolver.keys[did] = key.public_key()
    now = time.time()

    # A token valid for 100 years is refused, before any key lookup.
    century = create_service_jwt(key, iss=did, aud=AUD, lxm=LXM, exp_in=100 * 365 * 86400)
    with pytest.raises(AuthError) as info:
        await verify_service_jwt(century, audience=AUD, lxm=LXM, resolver=resolver)  # type: ignore[arg-type]
    assert "lifetime" in info.value.message or "future" in info.value.message
    assert resolver.fetches == 0
    # exp - iat over the cap (issued 2 h ago, expiring in 10 min) is refused too ...
    old = create_service_jwt(key, iss=did, aud=AUD, lxm=LXM, exp_in=7800, now=now - 7200)
    with pytest.raises(AuthError):
        await verify_service_jwt(old, audience=AUD, lxm=LXM, resolver=resolver)  # type: ignore[arg-type]
    # ... while what a PDS mints (up to an hour) passes.
    hour = create_service_jwt(key, iss=did, aud=AUD, lxm=LXM, exp_in=3600)
    assert await verify_service_jwt(hour, audience=AUD, lxm=LXM, resolver=resolver) == did  # type: ignore[arg-type]

    # The verified-token cache keeps a token for at most a minute: after a key rotation, an
    # hour-long token signed by the old key stops working within that minute.
    clock = [1000.0]
    auth = Authenticator(SERVICE_DID, resolver, clock=lambda: clock[0])  # type: ignore[arg-type]
    assert await auth.viewer(_request(hour), LXM, required=True) == did
    assert await auth.viewer(_request(hour), LXM, required=True) == did  # cached
    resolver.keys[did] = PrivateKey.generate("p256").public_key()  # rotated
    clock[0] += 61
    with pytest.raises(XRPCError) as xinfo:
        await auth.viewer(_request(hour), LXM, required=True)
    assert xinfo.value.status == 401

    # Forged tokens with random issuers: one lookup per issuer at most, within a budget.
    forger = PrivateKey.generate("k256")
    friend = _random_plc()
    friend_key = PrivateKey.generate("k256")
    resolver.keys[friend] = friend_key.public_key()
    # The gate's bucket refills with time: a frozen clock makes the budget exact however slowly
    # this loop runs on a loaded machine.
    gate = IssuerGate(clock=lambda: clock[0])
    auth = Authenticator(SERVICE_DID, resolver, clock=lambda: clock[0], issuers=gate)  # type: ignore[arg-type]
    friend_token = create_service_jwt(friend_key, iss=friend, aud=AUD, lxm=LXM)
    assert await auth.viewer(_request(friend_token), LXM, required=True) == friend
    before = resolver.fetches
    statuses: dict[int, int] = {}
    for _ in range(300):
        forged = create_service_jwt(forger, iss=_random_plc(), aud=AUD, lxm=LXM)
        with pytest.raises(XRPCError) as xinfo:
            await auth.viewer(_request(forged), LXM, required=True)
        statuses[xinfo.value.status] = statuses.get(xinfo.value.status, 0) + 1
    flood_fetches = resolver.fetches - before
    assert flood_fetches <= 60, flood_fetches
    assert set(statuses) <= {401, 429} and statuses.get(429, 0) >= 200, statuses
    # An issuer already known still gets in during the flood (its key is cached).
    assert await auth.viewer(_request(create_service_jwt(friend_key, iss=friend, aud=AUD, lxm=LXM)), LXM,
                             required=True) == friend

    # One unresolvable issuer over and over: looked up once (negative cache), whatever the error.
    for kind in ("not_found", "unreachable", "bad_document"):
        resolver.error_kind = kind
        gate = IssuerGate(clock=lambda: clock[0])
        auth = Authenticator(SERVICE_DID, resolver, clock=lambda: clock[0], issuers=gate)  # type: ignore[arg-type]
        ghost = _random_plc()
        before = resolver.fetches
        for _ in range(20):
            token = create_service_jwt(forger, iss=ghost, aud=AUD, lxm=LXM)
            with pytest.raises(XRPCError):
                await auth.viewer(_request(token), LXM, required=True)
        assert resolver.fetches - before == 1, (kind, resolver.fetches - before)

