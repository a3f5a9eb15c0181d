"""Plays (service-auth procedure, dedupe, counts, time series), stats, queue and preferences."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

World = Any  # the `world` fixture (conftest.World)
PLAY = "fm.plyr.play.recordPlay"


async def post(client: TestClient, nsid: str, body: Any, headers: dict[str, str], status: int = 200) -> dict[str, Any]:
    resp = await client.post("/xrpc/" + nsid, json=body, headers=headers)
    data = await resp.json()
    assert resp.status == status, data
    return data


async def test_plays_dedupe_per_listener_and_count_in_the_same_transaction(
    client: TestClient, world: World, pool: asyncpg.Pool
) -> None:
    ann = await world.account("ann")
    fan = await world.account("fan")
    other = await world.account("other")
    uri = await world.track(ann, "tune")

    first = await post(client, PLAY, {"track": uri, "durationMs": 120_000}, fan.auth(PLAY))
    assert first == {"counted": True, "playCount": 1}
    again = await post(client, PLAY, {"track": uri}, fan.auth(PLAY))
    assert again == {"counted": False, "playCount": 1}
    # many concurrent repeats by another listener still count once
    results = await asyncio.gather(*(post(client, PLAY, {"track": uri}, other.auth(PLAY)) for _ in range(8)))
    assert sum(r["counted"] for r in results) == 1
    assert await pool.fetchval("SELECT play_count FROM play_counts WHERE track_uri = $1", uri) == 2
    assert await pool.fetchval("SELECT sum(plays) FROM play_totals") == 2
    assert await pool.fetchval("SELECT count(*) FROM plays WHERE track_uri = $1", uri) == 2
    assert await pool.fetchval("SELECT artist_did FROM plays LIMIT 1") == ann.did

    # once the window has passed, the same listener counts again
    await pool.execute("UPDATE play_dedupe SET last_counted_at = now() - interval '1 hour'")
    assert (await post(client, PLAY, {"track": uri}, fan.auth(PLAY)))["playCount"] == 3

    track = await client.get("/xrpc/fm.plyr.feed.getTrack", params={"uri": uri})
    assert (await track.json())["track"]["playCount"] == 3

    series = await (await client.get("/xrpc/fm.plyr.stats.getTrackPlays", params={"uri": uri})).json()
    assert series["total"] == 3 and sum(b["count"] for b in series["buckets"]) == 3
    hourly = await (await client.get("/xrpc/fm.plyr.stats.getArtistPlays",
                                     params={"actor": ann.handle, "interval": "hour", "days": 1})).json()
    assert hourly["did"] == ann.did and hourly["total"] == 3
    assert sum(b["count"] for b in hourly["buckets"]) == 3

    stats = await (await client.get("/xrpc/fm.plyr.stats.getPlatformStats")).json()
    assert stats["tracks"] == 1 and stats["artists"] == 1 and stats["plays"] == 3


async def test_plays_need_good_service_auth(client: TestClient, world: World) -> None:
    from protocol.crypto import PrivateKey

    ann = await world.account("ann")
    fan = await world.account("fan")
    uri = await world.track(ann, "tune")
    body = {"track": uri}
    cases = {
        "missing": {},
        "not bearer": {"Authorization": "Basic abc"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "expired": fan.auth(PLAY, exp_in=-3600),
        "forged": fan.auth(PLAY, key=PrivateKey.generate("k256")),
        "other audience": fan.auth(PLAY, aud="did:web:elsewhere.test#plyr_appview"),
        "other method": fan.auth("fm.plyr.viewer.putQueue"),
        "no lxm": {"Authorization": "Bearer " + fan.token(None)},
    }
    for name, headers in cases.items():
        resp = await client.post("/xrpc/" + PLAY, json=body, headers=headers)
        data = await resp.json()
        assert resp.status == 401, (name, data)
        assert set(data) == {"error", "message"}, name
        assert resp.headers["WWW-Authenticate"].startswith("Bearer"), name
    # unknown DID at the directory
    stranger = world.plc.register("stranger")
    world.plc.docs.pop(stranger.did)
    resp = await client.post("/xrpc/" + PLAY, json=body, headers=stranger.auth(PLAY))
    assert resp.status == 401
    # a verified token is remembered for its own method only
    token = fan.token(PLAY)
    for _ in range(2):
        await post(client, PLAY, body, {"Authorization": f"Bearer {token}"})
    resp = await client.get("/xrpc/fm.plyr.viewer.getQueue", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401 and (await resp.json())["error"] == "BadJwtLexiconMethod"
    # bare-DID audience from older PDSes is accepted
    await post(client, PLAY, body, fan.auth(PLAY, aud="did:web:appview.test"))
    # a bad token on a public read is refused, not ignored
    resp = await client.get("/xrpc/fm.plyr.feed.getLatestTracks", headers={"Authorization": "Bearer x.y.z"})
    assert resp.status == 401
    # numbers beyond what the columns hold are refused by the lexicon, not by the database
    await post(client, PLAY, {"track": uri, "durationMs": 2**31}, fan.auth(PLAY), 400)
    await post(client, PLAY, {"track": uri, "durationMs": 2**70}, fan.auth(PLAY), 400)
    # unknown / hidden track
    await post(client, PLAY, {"track": f"at://{ann.did}/fm.plyr.track/3aaaaaaaaaaaa"}, fan.auth(PLAY), 404)
    await world.hide(ann)
    await post(client, PLAY, body, fan.auth(PLAY), 404)


async def test_queue_and_preferences_revisions(client: TestClient, world: World, pool: asyncpg.Pool) -> None:
    fan = await world.account("fan")
    ann = await world.account("ann")
    t1 = await world.track(ann, "a")
    t2 = await world.track(ann, "b")
    get_q, put_q = "fm.plyr.viewer.getQueue", "fm.plyr.viewer.putQueue"

    resp = await client.get("/xrpc/" + get_q)
    assert resp.status == 401
    start = await (await client.get("/xrpc/" + get_q, headers=fan.auth(get_q))).json()
    assert start == {"queue": {"items": []}, "revision": 0}

    r1 = await post(client, put_q, {"queue": {"items": [t1, t2], "currentIndex": 1}, "revision": 0}, fan.auth(put_q))
    assert r1 == {"revision": 1}
    # a second writer still at revision 0 loses, and nothing changes
    stale = await post(client, put_q, {"queue": {"items": [t2]}, "revision": 0}, fan.auth(put_q), 409)
    assert stale["error"] == "RevisionConflict"
    await post(client, put_q, {"queue": {"items": [t2]}, "revision": 7}, fan.auth(put_q), 409)
    now = await (await client.get("/xrpc/" + get_q, headers=fan.auth(get_q))).json()
    assert now == {"queue": {"items": [t1, t2], "currentIndex": 1}, "revision": 1}
    assert (await post(client, put_q, {"queue": {"items": [t2]}, "revision": 1}, fan.auth(put_q))) == {"revision": 2}

    # concurrent puts from the same revision: exactly one wins
    results = await asyncio.gather(*(
        client.post("/xrpc/" + put_q, json={"queue": {"items": [t1]}, "revision": 2}, headers=fan.auth(put_q))
        for _ in range(6)
    ))
    assert sorted(r.status for r in results) == [200] + [409] * 5

    # invalid bodies
    await post(client, put_q, {"queue": {"items": ["not-a-uri"]}, "revision": 3}, fan.auth(put_q), 400)
    await post(client, put_q, {"queue": {"items": []}, "revision": -1}, fan.auth(put_q), 400)
    await post(client, put_q, {"queue": {"items": []}}, fan.auth(put_q), 400)
    await post(client, put_q, {"queue": {"items": []}, "revision": 2**63}, fan.auth(put_q), 400)

    gp, pp = "fm.plyr.viewer.getPreferences", "fm.plyr.viewer.putPreferences"
    assert (await (await client.get("/xrpc/" + gp, headers=fan.auth(gp))).json())["revision"] == 0
    await post(client, pp, {"preferences": {"autoplay": True, "volume": 80}, "revision": 0}, fan.auth(pp))
    await post(client, pp, {"preferences": {"volume": 101}, "revision": 1}, fan.auth(pp), 400)
    await post(client, pp, {"preferences": {"theme": "da\x00rk"}, "revision": 1}, fan.auth(pp), 400)
    await post(client, pp, {"preferences": {"x\x00": 1}, "revision": 1}, fan.auth(pp), 400)
    await post(client, pp, {"preferences": {"autoplay": False}, "revision": 0}, fan.auth(pp), 409)
    prefs = await (await client.get("/xrpc/" + gp, headers=fan.auth(gp))).json()
    assert prefs == {"preferences": {"autoplay": True, "volume": 80}, "revision": 1}
    # another viewer has their own state
    other = await (await client.get("/xrpc/" + gp, headers=ann.auth(gp))).json()
    assert other["revision"] == 0
    assert await pool.fetchval("SELECT count(*) FROM viewer_state") == 2
