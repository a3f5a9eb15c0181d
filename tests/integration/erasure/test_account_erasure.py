"""Account data erasure (issue 17), on real Postgres, the real AppView and media apps, ffmpeg,
and local or S3 storage (moto): `fm.plyr.actor.deleteAccountData` and the `#account` deleted
event leave nothing of the account in any table (every table, from information_schema, with
written exemptions: tests/integration/erasure/holdings.py) or in storage (a listing), and keep
what another account uses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from unit.media.samples import image_bytes

from appview.erasure import take_all
from indexer.records import RecordOp
from indexer.writer import AccountChange, apply_account
from integration.appview.conftest import Account, World, make_cid
from integration.erasure.holdings import ALWAYS, DELETED, REPO, holdings, tables_naming
from integration.media.conftest import (
    BUCKET,
    SERVER_KEY,
    MediaServer,
    make_s3,
    media_settings,
    running_media_server,
)
from media.erasure import erase_forever, erase_pending
from media.storage import Storage
from tests.support.indexing import index_records

DELETE = "fm.plyr.actor.deleteAccountData"
GET = "fm.plyr.actor.getAccountDataDeletion"


def as_uploader(did: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SERVER_KEY}", "X-Plyr-Did": did}


@contextlib.asynccontextmanager
async def media_with(
    backend: str, pool: asyncpg.Pool, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[MediaServer]:
    settings = media_settings(tmp_path / "data", copyright_scan=True)
    kw: dict[str, Any] = {}
    if backend == "s3":
        moto = request.getfixturevalue("moto_url")
        s3 = make_s3(moto)
        with contextlib.suppress(Exception):  # made by an earlier test of this module
            await (await s3.client()).create_bucket(Bucket=BUCKET)
        await s3.close()
        kw["storage_factory"] = lambda st: make_s3(moto, media_url=st.public_url)
    async with running_media_server(pool, database_url, settings, **kw) as (_, server):
        yield server


async def stored_keys(storage: Storage) -> set[str]:
    keys: set[str] = set()
    for prefix in ("audio/", "images/", "exports/"):
        async for page in storage.list_objects(prefix):
            keys |= {obj.key for obj in page}
    return keys


@dataclass
class Seeded:
    alice: Account
    bob: Account
    alice_track: str
    bob_track: str  # plays an upload of alice's: that object is kept
    shared: dict[str, Any]  # that upload
    bob_upload: dict[str, Any]
    export_job: int


async def xrpc(client: TestClient, nsid: str, who: Account | None, body: Any = None,
               params: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    headers = who.auth(nsid) if who is not None else {}
    if body is None:
        resp = await client.get(f"/xrpc/{nsid}", params=params or {}, headers=headers)
    else:
        resp = await client.post(f"/xrpc/{nsid}", json=body, headers=headers)
    return resp.status, await resp.json()


async def seed(world: World, pool: asyncpg.Pool, media: MediaServer, client: TestClient,
               samples: dict[str, Path]) -> Seeded:  # fmt: skip
    alice = await world.account("alice")
    bob = await world.account("bob")
    # Alice's uploads: her track's audio (wav: a stream rendition is made) and cover (thumbnails),
    # and one that only bob's track plays (kept). Bob's own upload, which alice uploads again
    # while its job is live (she becomes a reader of bob's job).
    st, mine = await media.upload("audio", samples["tone.wav"].read_bytes(), headers=as_uploader(alice.did))
    assert st == 201 or st == 200, mine
    st, cover = await media.upload("image", image_bytes("PNG"), headers=as_uploader(alice.did))
    assert st in (200, 201), cover
    st, shared = await media.upload("audio", samples["tone.aiff"].read_bytes(), headers=as_uploader(alice.did))
    assert st in (200, 201), shared
    st, bobs = await media.upload("audio", samples["tone.aifc"].read_bytes(), headers=as_uploader(bob.did))
    assert st in (200, 201), bobs
    st, again = await media.upload("audio", samples["tone.aifc"].read_bytes(), headers=as_uploader(alice.did))
    assert st in (200, 201) and again["jobId"] == bobs["jobId"], (again, bobs)
    alice_track = await world.track(alice, "Mine", audioUrl=mine["url"], imageUrl=cover["url"])
    bob_track = await world.track(bob, "Hers, published by bob", audioUrl=shared["url"])
    await world.track(bob, "Bob's", audioUrl=bobs["url"])
    await world.like(bob, alice_track)
    await media.run_jobs(limit=50)  # transcodes, verifications, copyright scans (fingerprints)

    for uri in (alice_track, bob_track):
        st, body = await xrpc(client, "fm.plyr.play.recordPlay", alice, {"track": uri})
        assert st == 200 and body["counted"], body
    st, body = await xrpc(client, "fm.plyr.play.recordPlay", bob, {"track": alice_track})
    assert st == 200 and body["counted"], body
    st, _ = await xrpc(client, "fm.plyr.viewer.putQueue", alice, {"queue": {"items": [bob_track]}, "revision": 0})
    assert st == 200
    st, _ = await xrpc(client, "fm.plyr.viewer.putPreferences", alice, {"preferences": {"volume": 7}, "revision": 0})
    assert st == 200
    report = {"reasonType": "com.atproto.moderation.defs#reasonSpam",
              "subject": {"$type": "com.atproto.repo.strongRef", "uri": bob_track, "cid": make_cid("s")}}  # fmt: skip
    assert (await xrpc(client, "com.atproto.moderation.createReport", alice, report))[0] == 200
    report["subject"]["uri"] = alice_track
    assert (await xrpc(client, "com.atproto.moderation.createReport", bob, report))[0] == 200

    async with media.session.post(f"{media.url}/exports", headers=as_uploader(alice.did)) as resp:
        assert resp.status == 202, await resp.text()
        export_job = (await resp.json())["jobId"]
    await media.run_jobs(limit=10)
    assert (await media.job(export_job)).status == "done"

    # What other writers leave: a rate-limit count, a blob copy of her track, a mirror request.
    await pool.execute("INSERT INTO rate_limits VALUES ($1, 0, 4102444800, 3)", f"appview:did:{alice.did}")
    blob = make_cid("blob")
    await pool.execute("INSERT INTO media_mirrors (track_uri, blob_cid, url) VALUES ($1, $2, $3)",
                       alice_track, blob, mine["streamUrl"])  # fmt: skip
    await pool.execute("INSERT INTO mirror_outbox (track_uri, did, blob_cid, mime_type) VALUES ($1, $2, $3, 'audio/wav')",
                       alice_track, alice.did, blob)  # fmt: skip
    return Seeded(alice, bob, alice_track, bob_track, shared, bobs, export_job)


@contextlib.asynccontextmanager
async def media_erasing(pool: asyncpg.Pool, storage: Storage) -> AsyncIterator[None]:
    task = asyncio.create_task(erase_forever(pool, storage, asyncio.Event(), poll_s=0.05))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def counts(part: dict[str, Any], key: str = "removed") -> dict[str, int]:
    return {c["kind"]: c["count"] for c in part.get(key, [])}


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_delete_account_data_leaves_nothing_of_the_account(
    backend: str, pool: asyncpg.Pool, database_url: str, tmp_path: Path, request: pytest.FixtureRequest,
    world: World, make_client: Callable[..., Any], samples: dict[str, Path],
) -> None:  # fmt: skip
    client = await make_client()
    async with media_with(backend, pool, database_url, tmp_path, request) as media:
        s = await seed(world, pool, media, client, samples)
        before = await tables_naming(pool, s.alice.did)
        assert {"plays", "play_dedupe", "viewer_state", "reports", "rate_limits", "media_objects",
                "media_jobs", "media_job_readers", "media_mirrors", "mirror_outbox", "copyright_scans",
                "audio_fingerprints"} <= before, before  # fmt: skip
        stored_before = await stored_keys(media.ctx.storage)

        async with media_erasing(pool, media.ctx.storage):
            st, receipt = await xrpc(client, DELETE, s.alice, {})
        assert st == 200, receipt
        assert receipt["status"] == "done" and receipt["did"] == s.alice.did and receipt["origin"] == "user"
        appview, media_part = receipt["parts"]
        assert counts(appview) == {"plays": 2, "playDedupe": 2, "queue": 1, "preferences": 1, "reports": 1,
                                   "rateLimitCounts": 1}  # fmt: skip
        removed = counts(media_part)
        assert removed["audioObjects"] == 1 and removed["imageObjects"] == 1, removed
        assert removed["exports"] == 1 and removed["jobReaders"] == 1 and removed["blobCopies"] == 1, removed
        assert removed["mirrorRequests"] == 1 and removed["renditions"] >= 2 and removed["fingerprints"] >= 1, removed
        assert removed["copyrightScans"] >= 1 and removed["jobs"] >= 3, removed
        assert counts(media_part, "kept")["uploadsAnotherAccountUses"] == 1
        keys = set(media_part["storageKeys"])
        assert removed["storedFiles"] == len(keys) >= 5, keys  # master, stream, image + thumbs, export
        assert receipt["removedTotal"] == sum(counts(appview).values()) + sum(removed.values())

        # Every table: nothing names her but what is exempted, with its reason.
        assert await holdings(pool, s.alice.did, ALWAYS | REPO) == {}
        # Storage: her files are gone; the upload bob's track plays, and bob's, stay.
        stored = await stored_keys(media.ctx.storage)
        assert keys <= stored_before and not keys & stored, keys & stored
        kept = {r["storage_key"] for r in await pool.fetch(
            "SELECT storage_key FROM media_objects WHERE sha256 = ANY($1::text[])",
            [s.shared["sha256"], s.bob_upload["sha256"]])}  # fmt: skip
        assert len(kept) == 2 and kept <= stored
        assert await pool.fetchval("SELECT uploaded_by FROM media_objects WHERE sha256 = $1",
                                   s.shared["sha256"]) == s.bob.did  # fmt: skip
        # Counters follow: her plays are off every counter, bob's play of her track stays.
        pc = dict(await pool.fetch("SELECT track_uri, play_count FROM play_counts"))
        assert pc == {s.alice_track: 1, s.bob_track: 0}
        assert await pool.fetchval("SELECT sum(plays) FROM play_totals") == 1
        # The track stays in her repo and in the index (only our copies went).
        assert await pool.fetchval("SELECT count(*) FROM tracks WHERE did = $1", s.alice.did) == 1

        # A repeat removes nothing more, and says so; the receipt can be read again.
        async with media_erasing(pool, media.ctx.storage):
            st, again = await xrpc(client, DELETE, s.alice, {})
        assert st == 200 and again["status"] == "done" and again["removedTotal"] == 0, again
        assert again["request"] != receipt["request"] and "nothing more" in again["message"]
        assert all(c["count"] == 0 for part in again["parts"] for c in part["removed"])
        st, first = await xrpc(client, GET, s.alice, params={"request": str(receipt["request"])})
        assert st == 200 and first == receipt
        st, latest = await xrpc(client, GET, s.alice)
        assert st == 200 and latest["request"] == again["request"]
        # Bob cannot read hers.
        st, body = await xrpc(client, GET, s.bob, params={"request": str(receipt["request"])})
        assert st == 404 and body["error"] == "NotFound"


async def test_refused_without_her_own_token(
    pool: asyncpg.Pool, world: World, make_client: Callable[..., Any]
) -> None:
    client = await make_client(erasure_wait_seconds=0.2)  # no media here: its part stays pending
    alice = await world.account("alice")
    bob = await world.account("bob")
    track = await world.track(bob, "t")
    assert (await xrpc(client, "fm.plyr.play.recordPlay", alice, {"track": track}))[0] == 200

    async def post(headers: dict[str, str]) -> tuple[int, Any]:
        resp = await client.post(f"/xrpc/{DELETE}", json={}, headers=headers)
        return resp.status, await resp.json()

    tries = {
        "no token": {},
        "not a JWT": {"Authorization": "Bearer not-a-jwt"},
        "signed by bob's key as alice": alice.auth(DELETE, key=bob.key),
        "a token for another method": alice.auth("fm.plyr.viewer.putQueue"),
        "a token for another service": alice.auth(DELETE, aud="did:web:elsewhere.test#plyr_appview"),
        "an expired token": alice.auth(DELETE, exp_in=-120),
    }
    for name, headers in tries.items():
        status, body = await post(headers)
        assert status == 401, (name, status, body)
        assert set(body) == {"error", "message"} and body["error"] and body["message"], (name, body)
    resp = await client.get(f"/xrpc/{GET}")
    assert resp.status == 401 and (await resp.json())["error"] == "AuthRequired"
    # Nothing was removed, and no request recorded.
    assert await pool.fetchval("SELECT count(*) FROM plays WHERE listener_did = $1", alice.did) == 1
    assert await pool.fetchval("SELECT count(*) FROM erasure_requests") == 0
    # Bob's own token erases bob's data, never alice's.
    st, receipt = await xrpc(client, DELETE, bob, {})
    assert st == 200 and receipt["did"] == bob.did and receipt["status"] == "pending"  # no media here
    assert await pool.fetchval("SELECT count(*) FROM plays WHERE listener_did = $1", alice.did) == 1


async def test_account_deleted_event_erases_the_same(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, request: pytest.FixtureRequest,
    world: World, make_client: Callable[..., Any], samples: dict[str, Path],
) -> None:  # fmt: skip
    client = await make_client()
    async with media_with("local", pool, database_url, tmp_path, request) as media:
        s = await seed(world, pool, media, client, samples)
        # A version of one of her records our lexicons refuse: a dead letter naming her.
        refused = RecordOp("create", s.alice.did, "fm.plyr.track", world.clock.next(), world.clock.next(),
                           make_cid("refused"), {"$type": "fm.plyr.track", "title": 7})  # fmt: skip
        assert (await index_records(pool, [refused])).invalid == 1
        assert await pool.fetchval("SELECT count(*) FROM dead_letters WHERE did = $1", s.alice.did) == 1
        stored_before = await stored_keys(media.ctx.storage)
        async with pool.acquire() as conn:  # the indexer's writer, as for a firehose `#account`
            outcome = await apply_account(conn, AccountChange(did=s.alice.did, active=False, status="deleted"))
        assert outcome == "deleted"
        assert await pool.fetchval("SELECT count(*) FROM erasure_outbox WHERE did = $1", s.alice.did) == 1
        [request_id] = await take_all(pool)  # the AppView's loop (appview/service.py runs it)
        assert await take_all(pool) == []
        assert await erase_pending(pool, media.ctx.storage) == 1
        st, body = await xrpc(client, GET, s.alice, params={"request": str(request_id)})
        assert st == 200 and body["origin"] == "accountDeleted" and body["status"] == "done", body
        assert counts(body["parts"][0])["plays"] == 2

        assert await holdings(pool, s.alice.did, ALWAYS | DELETED) == {}
        assert await pool.fetchval("SELECT status FROM actors WHERE did = $1", s.alice.did) == "deleted"
        keys = set(body["parts"][1]["storageKeys"])
        stored = await stored_keys(media.ctx.storage)
        assert keys and keys <= stored_before and not keys & stored
        assert await pool.fetchval("SELECT storage_key FROM media_objects WHERE sha256 = $1",
                                   s.shared["sha256"]) in stored  # fmt: skip


async def test_a_listener_without_records_is_erased_on_deletion(
    pool: asyncpg.Pool, world: World, make_client: Callable[..., Any], plc: Any
) -> None:
    client = await make_client()
    artist = await world.account("artist")
    track = await world.track(artist, "t")
    listener = plc.register("listener")  # no records: no actors row
    assert (await xrpc(client, "fm.plyr.play.recordPlay", listener, {"track": track}))[0] == 200
    async with pool.acquire() as conn:
        assert await apply_account(conn, AccountChange(did=listener.did, active=False, status="deleted")) == "remembered"
    [request_id] = await take_all(pool)
    assert await pool.fetchval("SELECT count(*) FROM plays WHERE listener_did = $1", listener.did) == 0
    assert await pool.fetchval("SELECT play_count FROM play_counts WHERE track_uri = $1", track) == 0
    assert await pool.fetchval("SELECT origin FROM erasure_requests WHERE id = $1", request_id) == "account_deleted"


async def test_media_part_finishes_after_a_storage_failure(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, world: World, samples: dict[str, Path],
) -> None:  # fmt: skip
    """Rows go in one transaction; the stored files after it: a storage failure leaves the part
    `deleting`, and the next pass deletes them and finishes it."""
    alice = await world.account("alice")
    settings = media_settings(tmp_path / "data")
    async with running_media_server(pool, database_url, settings) as (_, media):
        st, up = await media.upload("audio", samples["tone.mp3"].read_bytes(), headers=as_uploader(alice.did))
        assert st in (200, 201), up
        async with pool.acquire() as conn:
            from appview.erasure import erase_appview_part

            request_id = await erase_appview_part(conn, alice.did, "user")
        storage = media.ctx.storage
        real_delete = storage.delete
        calls: list[str] = []

        async def failing(key: str) -> None:
            calls.append(key)
            from media.storage import StorageError

            raise StorageError(f"delete {key}: refused")

        storage.delete = failing  # type: ignore[method-assign]
        assert await erase_pending(pool, storage) == 0
        assert calls and await pool.fetchval(
            "SELECT status FROM erasure_media_parts WHERE request_id = $1", request_id) == "deleting"  # fmt: skip
        assert await pool.fetchval("SELECT count(*) FROM media_objects") == 0  # the rows went at once
        storage.delete = real_delete  # type: ignore[method-assign]
        assert await erase_pending(pool, storage) == 1
        row = await pool.fetchrow("SELECT status, receipt FROM erasure_media_parts WHERE request_id = $1", request_id)
        assert row["status"] == "done" and row["receipt"]["storageKeys"] == [up["url"].split("/media/", 1)[1]]
        assert await stored_keys(storage) == set()
        assert await erase_pending(pool, storage) == 0  # done stays done



async def test_concurrent_requests_remove_each_thing_once(
    pool: asyncpg.Pool, world: World, make_client: Callable[..., Any]
) -> None:
    client = await make_client(erasure_wait_seconds=0)
    alice = await world.account("alice")
    bob = await world.account("bob")
    tracks = [await world.track(bob, f"t{i}") for i in range(3)]
    for uri in tracks:
        assert (await xrpc(client, "fm.plyr.play.recordPlay", alice, {"track": uri}))[0] == 200
        assert (await xrpc(client, "fm.plyr.play.recordPlay", bob, {"track": uri}))[0] == 200
    answers = await asyncio.gather(*(xrpc(client, DELETE, alice, {}) for _ in range(4)))
    assert all(st == 200 for st, _ in answers), answers
    removed = [counts(body["parts"][0]).get("plays", 0) for _, body in answers]
    assert sorted(removed) == [0, 0, 0, 3], removed
    assert dict(await pool.fetch("SELECT track_uri, play_count FROM play_counts")) == {u: 1 for u in tracks}
    assert await pool.fetchval("SELECT sum(plays) FROM play_totals") == 3
