"""Labels in views (appview/labels.py): label objects on every view, labelers negotiated with
`atproto-accept-labelers`, `;redact`, hiddenLabels for viewers and anonymous requests, and a
page's statement count unchanged by labels. Label rows are written as the label subscriber
writes them (migrations/0040_moderation.sql)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core.settings import LabelSettings
from tests.integration.appview.test_appview_http import LATEST, CountingPool, expect_error

World = Any  # the `world` fixture (conftest.World)
X = "/xrpc/"

MOD = "did:web:mod.labels.test"  # a moderation labeler
LAB = "did:web:lab.labels.test"  # a subscribed labeler
FAR = "did:web:far.labels.test"  # a labeler we do not subscribe to
SETTINGS = LabelSettings(labelers=(MOD, LAB), moderation_labelers=(MOD,), default_labelers=())
ACCEPT = "atproto-accept-labelers"
CONTENT = "atproto-content-labelers"


class Labels:
    """Rows of `labels`, as indexer/labels/ stores them: one per (uri, src, val), the newest
    state winning; `view` the label's JSON without its signature."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.seq = itertools.count(1)

    async def put(self, src: str, uri: str, val: str, *, neg: bool = False, exp: datetime | None = None,
                  cid: str | None = None) -> dict[str, Any]:
        cts = datetime.now(UTC).replace(microsecond=0)
        view: dict[str, Any] = {"ver": 1, "src": src, "uri": uri, "val": val,
                                "cts": cts.isoformat().replace("+00:00", "Z")}
        if cid is not None:
            view["cid"] = cid
        if neg:
            view["neg"] = True
        if exp is not None:
            view["exp"] = exp.isoformat().replace("+00:00", "Z")
        await self.pool.execute(
            "INSERT INTO labels (uri, src, val, cid, neg, cts, exp, sig, view, seq) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (uri, src, val) DO UPDATE SET "
            "cid = excluded.cid, neg = excluded.neg, cts = excluded.cts, exp = excluded.exp, "
            "sig = excluded.sig, view = excluded.view, seq = excluded.seq",
            uri, src, val, cid, neg, cts, exp, b"\x01" * 64, view, next(self.seq),
        )  # fmt: skip
        return view

    async def negate(self, src: str, uri: str, val: str) -> None:
        await self.put(src, uri, val, neg=True)


async def get(client: TestClient, nsid: str, status: int = 200, headers: dict[str, str] | None = None,
              **params: Any) -> dict[str, Any]:
    resp = await client.get(X + nsid, params=params, headers=headers or {})
    body = await resp.json()
    assert resp.status == status, body
    return body


def vals(view: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((lb["src"], lb["val"]) for lb in view["labels"])


async def test_views_carry_the_labels_of_the_accepted_labelers(make_client: Any, world: World,
                                                               pool: asyncpg.Pool) -> None:
    client = await make_client(labels=SETTINGS)
    labels = Labels(pool)
    ann = await world.account("ann")
    fan = await world.account("fan")
    track = await world.track(ann, "Night Drive", labels={"$type": "com.atproto.label.defs#selfLabels",
                                                           "values": [{"val": "explicit"}]})
    cid = (await get(client, "fm.plyr.feed.getTrack", uri=track))["track"]["cid"]
    like = await world.like(fan, track)
    comment = await world.comment(fan, track, "nice", 1000)
    playlist = await world.playlist(ann, "Roads", [track])
    hour = timedelta(hours=1)
    await labels.put(MOD, track, "!warn")
    rude = await labels.put(LAB, track, "rude")
    await labels.put(LAB, track, "later", exp=datetime.now(UTC) + hour)
    await labels.put(LAB, track, "past", exp=datetime.now(UTC) - hour)  # expired: never shown
    await labels.put(LAB, track, "withdrawn")
    await labels.negate(LAB, track, "withdrawn")  # negated: gone
    await labels.put(LAB, track, "this-version", cid=cid)
    await labels.put(LAB, track, "old-version", cid="bafyreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    await labels.put(FAR, track, "far")
    await labels.put(LAB, ann.did, "spammy")
    await labels.put(LAB, fan.did, "fan-account")
    await labels.put(LAB, like, "like-label")
    await labels.put(LAB, comment, "comment-label")
    await labels.put(LAB, playlist, "list-label")
    await labels.put(LAB, f"at://{ann.did}/fm.plyr.actor.profile/self", "profile-label")
    self_label = {"ver": 1, "src": ann.did, "uri": track, "cid": cid, "val": "explicit",
                  "cts": "2026-01-01T00:01:00Z"}

    # No header: the default labelers (here the moderation labelers, none being configured).
    resp = await client.get(X + "fm.plyr.feed.getTrack", params={"uri": track})
    t = (await resp.json())["track"]
    assert resp.headers[CONTENT] == MOD and ACCEPT in resp.headers["Vary"]
    assert t["labels"][0] == self_label and vals(t) == [(ann.did, "explicit"), (MOD, "!warn")]
    assert t["author"]["labels"] == []

    # One labeler: its labels (the live ones, on this version) on the track and on the account.
    resp = await client.get(X + "fm.plyr.feed.getTrack", params={"uri": track}, headers={ACCEPT: LAB})
    t = (await resp.json())["track"]
    assert resp.headers[CONTENT] == LAB
    assert vals(t) == [(ann.did, "explicit"), (LAB, "later"), (LAB, "rude"), (LAB, "this-version")]
    assert rude in t["labels"] and all("sig" not in lb for lb in t["labels"])
    assert vals(t["author"]) == [(LAB, "spammy")]

    # A labeler we do not subscribe to cannot apply; the rest can, in the header's order.
    resp = await client.get(X + "fm.plyr.feed.getTrack", params={"uri": track},
                            headers={ACCEPT: f"{FAR}, {LAB}, {MOD}"})
    assert resp.headers[CONTENT] == f"{LAB}, {MOD}"
    assert (LAB, "rude") in vals((await resp.json())["track"])
    # An empty header: no labeler at all, self labels only.
    resp = await client.get(X + "fm.plyr.feed.getTrack", params={"uri": track}, headers={ACCEPT: ""})
    assert resp.headers[CONTENT] == "" and (await resp.json())["track"]["labels"] == [self_label]
    # Bad syntax is an error, not a guess (public and authenticated alike).
    for bad in ("not a did", f"{LAB},,{MOD}", f"{LAB};Bad Param"):
        await expect_error(await client.get(LATEST, headers={ACCEPT: bad}), 400, "InvalidRequest")
    nsid = "fm.plyr.feed.getLatestTracks"
    await expect_error(await client.get(LATEST, headers={ACCEPT: "nope", **fan.auth(nsid)}), 400, "InvalidRequest")

    # The other views, with LAB.
    h = {ACCEPT: LAB}
    t = (await get(client, nsid, headers=h))["tracks"][0]
    assert (LAB, "rude") in vals(t) and vals(t["author"]) == [(LAB, "spammy")]
    mine = await get(client, nsid, headers={**h, **fan.auth(nsid)})
    assert mine["tracks"][0]["viewer"] == {"like": like} and vals(mine["tracks"][0]) == vals(t)
    likes = (await get(client, "fm.plyr.feed.getLikes", headers=h, uri=track))["likes"]
    assert vals(likes[0]) == [(LAB, "like-label")] and vals(likes[0]["actor"]) == [(LAB, "fan-account")]
    comments = (await get(client, "fm.plyr.feed.getComments", headers=h, uri=track))["comments"]
    assert vals(comments[0]) == [(LAB, "comment-label")] and vals(comments[0]["author"]) == [(LAB, "fan-account")]
    lst = await get(client, "fm.plyr.graph.getList", headers=h, uri=playlist)
    assert vals(lst["list"]) == [(LAB, "list-label")] and vals(lst["list"]["author"]) == [(LAB, "spammy")]
    assert vals(lst["tracks"][0]) == vals(t)
    lists = (await get(client, "fm.plyr.graph.getActorLists", headers=h, actor=ann.did))["lists"]
    assert vals(lists[0]) == [(LAB, "list-label")]
    profile = (await get(client, "fm.plyr.actor.getProfile", headers=h, actor=ann.did))["profile"]
    assert vals(profile) == [(LAB, "profile-label"), (LAB, "spammy")]
    actors = (await get(client, "fm.plyr.search.searchActors", headers=h, q="ann"))["actors"]
    assert vals(next(a for a in actors if a["did"] == ann.did)) == [(LAB, "spammy")]
    # ...and without it, none of LAB's.
    assert vals((await get(client, "fm.plyr.actor.getProfile", actor=ann.did))["profile"]) == []
    assert vals((await get(client, "fm.plyr.feed.getLikes", uri=track))["likes"][0]) == []

    # PLYR_DEFAULT_LABELERS: who applies when the header is absent.
    other = await make_client(labels=LabelSettings(labelers=(MOD, LAB), moderation_labelers=(MOD,),
                                                   default_labelers=(LAB,)))
    resp = await other.get(X + "fm.plyr.feed.getTrack", params={"uri": track})
    assert resp.headers[CONTENT] == LAB and (LAB, "rude") in vals((await resp.json())["track"])


async def test_microcache_keeps_answers_apart_by_labelers(make_client: Any, world: World,
                                                          pool: asyncpg.Pool) -> None:
    client = await make_client(labels=SETTINGS, microcache_seconds=30)
    ann = await world.account("ann")
    track = await world.track(ann, "tune")
    await Labels(pool).put(LAB, track, "rude")
    plain = await client.get(LATEST)
    with_lab = await client.get(LATEST, headers={ACCEPT: LAB})
    assert plain.headers["ETag"] != with_lab.headers["ETag"]
    assert vals((await with_lab.json())["tracks"][0]) == [(LAB, "rude")]
    assert vals((await plain.json())["tracks"][0]) == []
    # The same labelers however written share the cached answer.
    again = await client.get(LATEST, headers={ACCEPT: f" {LAB} , {FAR}"})
    assert again.headers["ETag"] == with_lab.headers["ETag"]


async def test_redact_removes_what_that_labeler_took_down(make_client: Any, world: World,
                                                          pool: asyncpg.Pool) -> None:
    client = await make_client(labels=SETTINGS)
    labels = Labels(pool)
    ann = await world.account("ann")
    bob = await world.account("bob")
    kept = await world.track(ann, "kept")
    down = await world.track(ann, "down")
    suspended = await world.track(bob, "suspended artist")
    await labels.put(LAB, down, "!takedown")
    await labels.put(LAB, bob.did, "!suspend")
    # LAB is no moderation labeler: without `;redact` its takedown is a label like any other.
    tracks = (await get(client, "fm.plyr.feed.getLatestTracks", headers={ACCEPT: LAB}))["tracks"]
    assert {t["uri"] for t in tracks} == {kept, down, suspended}
    assert (LAB, "!takedown") in vals(next(t for t in tracks if t["uri"] == down))
    # With `;redact` the request does not see it, nor the suspended account's tracks.
    resp = await client.get(LATEST, headers={ACCEPT: f"{LAB};redact"})
    assert resp.headers[CONTENT] == f"{LAB};redact"
    assert [t["uri"] for t in (await resp.json())["tracks"]] == [kept]
    await get(client, "fm.plyr.feed.getTrack", 404, headers={ACCEPT: f"{LAB};redact"}, uri=down)
    await get(client, "fm.plyr.actor.getProfile", 404, headers={ACCEPT: f"{LAB};redact"}, actor=bob.did)
    nsid = "fm.plyr.feed.getTracks"
    got = await get(client, nsid, headers={ACCEPT: f"{LAB};redact", **bob.auth(nsid)}, uris=[kept, down])
    assert [t["uri"] for t in got["tracks"]] == [kept]
    # Other requests are not affected.
    assert len((await get(client, "fm.plyr.feed.getLatestTracks"))["tracks"]) == 3


async def test_hidden_labels_per_viewer_and_a_safe_default(make_client: Any, world: World,
                                                           pool: asyncpg.Pool) -> None:
    client = await make_client(labels=SETTINGS)
    labels = Labels(pool)
    ann = await world.account("ann")
    fan = await world.account("fan")  # never sets preferences
    open_ = await world.account("open")  # hides nothing
    picky = await world.account("picky")  # hides what they chose
    vague = await world.account("vague")  # has preferences, without hiddenLabels
    plain = await world.track(ann, "plain")
    porn = await world.track(ann, "labelled porn")
    sexual = await world.track(ann, "self-labelled sexual",
                               labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "sexual"}]})
    warned = await world.track(ann, "warned")
    rude = await world.track(ann, "rude")
    await labels.put(MOD, porn, "porn")
    await labels.put(MOD, warned, "!warn")
    await labels.put(MOD, rude, "rude")
    pp = "fm.plyr.viewer.putPreferences"
    for who, prefs in ((open_, {"hiddenLabels": []}), (picky, {"hiddenLabels": ["rude", "!warn"]}),
                       (vague, {"volume": 10})):
        resp = await client.post(X + pp, json={"preferences": prefs, "revision": 0}, headers=who.auth(pp))
        assert resp.status == 200, await resp.text()
    nsid = "fm.plyr.feed.getLatestTracks"

    async def seen(who: Any = None, **headers: str) -> set[str]:
        auth = who.auth(nsid) if who is not None else {}
        return {t["uri"] for t in (await get(client, nsid, headers={**headers, **auth}))["tracks"]}

    every = {plain, porn, sexual, warned, rude}
    safe = every - {porn, sexual}
    assert await seen() == safe  # anonymous: the default hides porn and sexual; !warn is shown
    assert await seen(fan) == safe  # never set: the default
    assert await seen(vague) == safe  # set, but not hiddenLabels: the default
    assert await seen(open_) == every
    assert await seen(picky) == every - {rude}  # !warn is never hidden
    # Only the labels of the labelers the request hears count (self labels always do).
    assert await seen(None, **{ACCEPT: ""}) == every - {sexual}
    # A single track asked for by name comes with its labels, for the client to warn.
    t = (await get(client, "fm.plyr.feed.getTrack", uri=porn))["track"]
    assert (MOD, "porn") in vals(t)
    # The statement count for a viewer is the same: preferences come with their likes.
    counting = CountingPool(pool)
    counted = await make_client(app_pool=counting, labels=SETTINGS, freshness_interval=3600)
    counting.queries.clear()
    resp = await counted.get(LATEST, headers=picky.auth(nsid))
    assert {t["uri"] for t in (await resp.json())["tracks"]} == every - {rude}
    assert len(counting.queries) == 2


async def test_a_labelled_page_costs_the_same_statements(make_client: Any, world: World,
                                                         pool: asyncpg.Pool) -> None:
    counting = CountingPool(pool)
    client = await make_client(app_pool=counting, labels=SETTINGS, freshness_interval=3600)
    labels = Labels(pool)
    ann = await world.account("ann")
    fan = await world.account("fan")
    await labels.put(LAB, ann.did, "artist-label")
    await labels.put(LAB, fan.did, "fan-label")
    uris = []
    for i in range(64):
        uri = await world.track(ann, f"harbor song {i}", labels={
            "$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "explicit"}]})
        uris.append(uri)
        await world.like(fan, uri)
        await labels.put(LAB, uri, "rude")
        await labels.put(MOD, uri, "!warn")
    for uri in uris[:4]:  # removed: skeletons leave them out, so pages stay full
        await labels.put(MOD, uri, "!takedown")
    playlist = await world.playlist(ann, "all", uris)
    h = {ACCEPT: f"{LAB}, {MOD}"}
    nsid = "fm.plyr.feed.getLatestTracks"
    counts = {}
    for limit in (5, 50):
        for who, headers in (("anon", h), ("viewer", {**h, **fan.auth(nsid)})):
            counting.queries.clear()
            resp = await client.get(LATEST, params={"limit": limit}, headers=headers)
            tracks = (await resp.json())["tracks"]
            assert len(tracks) == limit and all(len(t["labels"]) == 3 for t in tracks)
            counts[(limit, who)] = len(counting.queries)
    assert counts[(5, "anon")] == counts[(50, "anon")] == 1
    assert counts[(5, "viewer")] == counts[(50, "viewer")] == 2
    for path, params in (("fm.plyr.feed.getActorLikes", {"actor": fan.did}),
                         ("fm.plyr.feed.getTopTracks", {"period": "all"}),
                         ("fm.plyr.search.searchTracks", {"q": "harbor song"}),
                         ("fm.plyr.feed.getLikes", {"uri": uris[10]}),
                         ("fm.plyr.graph.getList", {"uri": playlist})):
        seen = set()
        for limit in (5, 30):
            counting.queries.clear()
            resp = await client.get(X + path, params={**params, "limit": limit}, headers={**h, **fan.auth(path)})
            body = await resp.json()
            assert resp.status == 200, body
            items = body.get("tracks", body.get("likes"))
            assert len(items) == (1 if path.endswith("getLikes") else limit), path
            seen.add(len(counting.queries))
        assert len(seen) == 1 and seen.pop() <= 4, path


async def test_the_removal_anti_join_uses_labels_removing(pool: asyncpg.Pool) -> None:
    from appview.hydrate import _TRACKS_SQL
    from appview.labels import Moderation
    from appview.methods.feed import _ACTOR_LIKES

    # Skeletons anti-join on the small partial index...
    sql = Moderation((MOD,)).sql(_ACTOR_LIKES.format(where=""))
    assert "@removed" not in sql and "labels rm" in sql
    # ...and track views, which read every label of the track and its artist anyway, decide
    # removal from those rows: one probe of the labels primary key per track for all of it.
    views = Moderation((MOD,)).sql(_TRACKS_SQL)
    assert "@removing" not in views and "labels rm" not in views and f"ARRAY['{MOD}']" in views
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # tiny tables: see what it can use
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, 50, "did:plc:x"))
        view_plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + views, ["at://did:plc:x/fm.plyr.track/1"]))
    assert "labels_removing" in plan, plan
    assert view_plan.count("labels_pkey") == 1 and "labels_removing" not in view_plan, view_plan
    # No moderation labeler: no anti-join at all, and nothing a track view's labels remove.
    assert "labels rm" not in Moderation(()).sql(_ACTOR_LIKES.format(where=""))
    assert "bool_or((false))" in Moderation(()).sql(_TRACKS_SQL)


async def test_track_views_list_labels_as_the_per_subject_query_does(world: World, pool: asyncpg.Pool) -> None:
    """Track views read a track's and its artist's labels in one probe (appview/hydrate.py):
    the same labels, in the same (src, val) order, as labels_sql (what the other views use)
    reads for each subject; versions, negations, expiry and removal as there."""
    from appview.hydrate import read_track_views
    from appview.labels import Moderation, labels_sql

    ann = await world.account("ann")
    track = await world.track(ann, "Many Labels", labels={"$type": "com.atproto.label.defs#selfLabels",
                                                          "values": [{"val": "explicit"}]})
    other = await world.track(ann, "Other")
    cid = await pool.fetchval("SELECT cid FROM tracks WHERE uri = $1", track)
    labels = Labels(pool)
    past, future = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(days=1)
    for src, val in (("did:web:z.test", "spam"), (LAB, "rude"), (MOD, "porn"), (LAB, "nudity"), (FAR, "!warn")):
        await labels.put(src, track, val)
    await labels.put(MOD, track, "sexual", cid=cid)
    await labels.put(MOD, track, "graphic-media", cid="bafyreianotherversion")  # another version
    await labels.put(LAB, track, "gore", exp=past)
    await labels.put(LAB, track, "!warn", exp=future)
    await labels.negate(LAB, track, "spam")
    await labels.put(LAB, ann.did, "spam")
    await labels.put(MOD, ann.did, "!warn")
    await labels.put(MOD, other, "!hide", exp=past)  # expired: not removed
    mod = Moderation((MOD,))
    views = await read_track_views(pool, [track, other], mod)
    expected = await pool.fetchrow(
        f"SELECT {labels_sql('t.uri', cid='t.cid')} AS own, {labels_sql('t.did')} AS theirs FROM tracks t WHERE t.uri = $1",
        track)  # fmt: skip
    assert expected is not None
    assert views[track]["_labels"] == expected["own"] and views[track]["author"]["_labels"] == expected["theirs"]
    assert [(lb["src"], lb["val"]) for lb in views[track]["_labels"]] == [
        (FAR, "!warn"), (LAB, "!warn"), (LAB, "nudity"), (LAB, "rude"), (MOD, "porn"), (MOD, "sexual"),
        ("did:web:z.test", "spam")]  # fmt: skip
    assert [lb["val"] for lb in views[track]["author"]["_labels"]] == ["spam", "!warn"]
    assert views[track]["labels"][0]["val"] == "explicit"  # self labels as before
    assert "_labels" not in views[other] and other in views
    await labels.put(MOD, other, "!hide")  # a moderation labeler removes it
    await labels.put(LAB, track, "!takedown")  # not a moderation labeler: still there
    assert set(await read_track_views(pool, [track, other], mod)) == {track}
    await labels.put(MOD, ann.did, "!takedown")  # the artist removed: all of theirs gone
    assert await read_track_views(pool, [track, other], mod) == {}
    assert set(await read_track_views(pool, [track, other], Moderation(()))) == {track, other}
