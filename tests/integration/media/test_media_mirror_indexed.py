"""The indexer queues the PDS blob mirror: a track record with an `audioBlob` written through the
real writer (`apply_batch`, real Postgres) gets a mirror request in the same transaction, which
media turns into one `mirror` job; replays do not queue more; the real media worker then fetches
the blob from a local PDS stand-in (aiohttp, with its did:web document), and the track plays
from our copy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import asyncpg

from indexer.records import RecordOp
from indexer.writer import AccountChange, apply_account, apply_batch, default_lexicons
from integration.media.conftest import MediaServer
from integration.media.test_media_mirror import FakePds, pds, resolver  # noqa: F401 - fixtures
from media.ingest import stream_key
from media.mirror_requests import take_all_requests
from protocol.identity import IdentityResolver
from tests.support.mirrors import played_url
from tests.support.rkeys import tid_key

TRACK = "fm.plyr.track"


def blob_track(title: str, cid: str, size: int, mime: str = "audio/wav") -> dict[str, Any]:
    return {
        "$type": TRACK,
        "title": title,
        "artist": "Blob Artist",
        "fileType": "wav",
        "audioBlob": {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": size},
        "createdAt": "2026-11-24T12:00:00.000Z",
    }


def op(did: str, rkey: str, rev: str, record: dict[str, Any] | None, action: str = "create") -> RecordOp:
    # The record CID only has to be a string here: the writer stores what the verifier checked.
    cid = None if record is None else f"bafyrei{hashlib.sha256(repr(record).encode()).hexdigest()[:40]}"
    return RecordOp(action, did, TRACK, tid_key(rkey), rev, cid, record)  # readable name -> TID


async def write(pool: asyncpg.Pool, *ops: RecordOp) -> Any:
    """Index `ops`, then let media take the mirror requests (as its NOTIFY listener would)."""
    async with pool.acquire() as conn:
        result = await apply_batch(conn, list(ops), lexicons=default_lexicons(), source="test")
    await take_all_requests(pool)
    return result


async def set_account(pool: asyncpg.Pool, change: AccountChange) -> str:
    async with pool.acquire() as conn:
        outcome = await apply_account(conn, change)
    await take_all_requests(pool)
    return outcome


async def mirror_jobs(pool: asyncpg.Pool, uri: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, status, payload, dedupe_key FROM media_jobs WHERE kind = 'mirror' AND payload->>'track_uri' = $1 ORDER BY id",
        uri,
    )


async def test_indexed_blob_track_is_mirrored_once(
    media_server: MediaServer, pds: FakePds, resolver: IdentityResolver, pool: asyncpg.Pool,  # noqa: F811
    samples: dict[str, Path],
) -> None:  # fmt: skip
    data = samples["tone.wav"].read_bytes()
    cid = pds.add_blob(data)
    uri = f"at://{pds.did}/{TRACK}/{tid_key('3kblobtrack1')}"
    record = blob_track("Blob Song", cid, len(data))

    result = await write(pool, op(pds.did, "3kblobtrack1", "3kaaaaaaaab2", record))
    assert result.applied == 1
    jobs = await mirror_jobs(pool, uri)
    assert len(jobs) == 1
    assert jobs[0]["status"] == "queued" and jobs[0]["dedupe_key"] == f"{uri}#{cid}"
    assert jobs[0]["payload"] == {"track_uri": uri, "did": pds.did, "blob_cid": cid, "mime_type": "audio/wav"}

    # A replay of the same write and an older one: ignored by the rev rules, nothing queued.
    again = await write(
        pool,
        op(pds.did, "3kblobtrack1", "3kaaaaaaaab2", record),
        op(pds.did, "3kblobtrack1", "3kaaaaaaaaa2", blob_track("Older", cid, len(data))),
    )
    assert again.applied == 0
    assert len(await mirror_jobs(pool, uri)) == 1

    # The real worker fetches, checks, stores and transcodes (WAV is lossless): MP3 rendition.
    assert await media_server.run_jobs(media_server.worker(resolver=resolver)) == 1
    jobs = await mirror_jobs(pool, uri)
    assert [j["status"] for j in jobs] == ["done"]
    sha = hashlib.sha256(data).hexdigest()
    ours = media_server.ctx.storage.url(stream_key(sha))
    assert await played_url(pool, uri) == ours
    async with media_server.session.get(ours) as resp:
        assert resp.status == 200 and (await resp.read())[:3] == b"ID3"
    master = await pool.fetchval("SELECT url FROM media_objects WHERE sha256 = $1", sha)
    async with media_server.session.get(master) as resp:
        assert await resp.read() == data

    # A newer version with the same blob (a title change, or a resync's re-write): our copy
    # stays, no new job. A new blob: a new job, and the track no longer plays the old copy.
    newer = await write(pool, op(pds.did, "3kblobtrack1", "3kaaaaaaaac2", blob_track("Renamed", cid, len(data)), "update"))
    assert newer.applied == 1
    assert await pool.fetchval("SELECT title FROM tracks WHERE uri = $1", uri) == "Renamed"
    assert await played_url(pool, uri) == ours
    assert len(await mirror_jobs(pool, uri)) == 1
    assert await media_server.run_jobs(media_server.worker(resolver=resolver)) == 0

    other = samples["tone.mp3"].read_bytes()
    cid2 = pds.add_blob(other)
    await write(pool, op(pds.did, "3kblobtrack1", "3kaaaaaaaad2", blob_track("New audio", cid2, len(other), "audio/mpeg"), "update"))
    jobs = await mirror_jobs(pool, uri)
    assert [(j["status"], j["payload"]["blob_cid"]) for j in jobs] == [("done", cid), ("queued", cid2)]
    assert await played_url(pool, uri) is None
    assert await media_server.run_jobs(media_server.worker(resolver=resolver)) == 1
    url2 = await played_url(pool, uri)
    assert url2 is not None and url2 != ours
    async with media_server.session.get(url2) as resp:
        assert await resp.read() == other  # an MP3 plays as uploaded


async def test_hidden_actor_is_mirrored_when_shown_again(
    media_server: MediaServer, pds: FakePds, resolver: IdentityResolver, pool: asyncpg.Pool,  # noqa: F811
    samples: dict[str, Path],
) -> None:  # fmt: skip
    data = samples["tone.mp3"].read_bytes()
    cid = pds.add_blob(data)
    uri = f"at://{pds.did}/{TRACK}/{tid_key('3kblobtrack2')}"
    await set_account(pool, AccountChange(pds.did, False, "deactivated"))
    result = await write(pool, op(pds.did, "3kblobtrack2", "3kaaaaaaaab2", blob_track("Hidden", cid, len(data), "audio/mpeg")))
    assert result.applied == 1
    assert await mirror_jobs(pool, uri) == []  # its PDS would not serve the blob now

    assert await set_account(pool, AccountChange(pds.did, True)) == "shown"
    jobs = await mirror_jobs(pool, uri)
    assert [(j["status"], j["payload"]["mime_type"]) for j in jobs] == [("queued", "audio/mpeg")]
    assert await media_server.run_jobs(media_server.worker(resolver=resolver)) == 1
    url = await played_url(pool, uri)
    async with media_server.session.get(url) as resp:
        assert await resp.read() == data
    # Hidden and shown again once it is mirrored: nothing to queue.
    await set_account(pool, AccountChange(pds.did, False, "deactivated"))
    await set_account(pool, AccountChange(pds.did, True))
    assert len(await mirror_jobs(pool, uri)) == 1
