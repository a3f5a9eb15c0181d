"""When the catalog grows, and what moderators decided before (issue 16), with real fingerprints:
a new reference's reverse lookup finds the audio scanned clear before (a plain copy, and a copy
sped up 2 % with its pitch) and only that audio is scanned again, now flagged; a match resolved
`false_positive` is recorded on a rescan as already decided (out of the review queue);
`original_artist` leaves the reference out of that artist's scans and not of another's; the
allow-list's reference cannot be removed under it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from appview.moderation.copyright import list_scans, resolve_scan
from appview.moderation.copyright_cli import render
from integration.media.conftest import SERVER_KEY, MediaServer, media_settings, running_media_server
from integration.media.test_copyright_scans import add_track, scan_worker, scans, track_status
from media.copyright import store
from media.copyright.rescan import add_and_rescan
from media.fingerprint import (
    QUERY_SPEEDS,
    find_matches,
    fingerprint_file,
    remove_reference,
    store_fingerprint,
)
from tests.support import audio_corpus as ac

ANN = "did:plc:annrescans000000000000000"
BOB = "did:plc:bobrescans000000000000000"
CAT = "did:plc:catpitched000000000000000"
DAN = "did:plc:danalsocopies0000000000000"


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rescans")
    p1, p2, p3 = (ac.make_piece(folder / f"p{i}.wav", 30 + i, 40) for i in (1, 2, 3))
    mp3 = ("-c:a", "libmp3lame", "-b:a", "128k")
    return {
        "p1.wav": p1, "p3.wav": p3,
        "ann": ac.encode(p1, folder / "ann.mp3", filters="aresample=44100", codec=mp3),
        "bob": ac.encode(p2, folder / "bob.mp3", filters="aresample=44100", codec=mp3),
        # p3 2 % faster and higher: a plain resample of in-tune music
        "cat": ac.encode(p3, folder / "cat.mp3", filters="aresample=44100,asetrate=44100*1.02,aresample=44100", codec=mp3),
        "dan": ac.encode(p1, folder / "dan.mp3", filters="aresample=44100,volume=0.7", codec=ac.MP3_192K),
    }  # fmt: skip


@pytest.fixture
async def media(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[MediaServer]:
    settings = media_settings(tmp_path / "data", copyright_scan=True)
    async with running_media_server(pool, database_url, settings) as (_, server):
        yield server


async def publish(media: MediaServer, pool: asyncpg.Pool, did: str, path: Path) -> tuple[str, str]:
    """`did` uploads `path` and a track plays it: (track uri, sha-256)."""
    status, body = await media.upload("audio", path.read_bytes(),  # noqa: ASYNC240 - a small test file
                                      headers={"Authorization": f"Bearer {SERVER_KEY}", "X-Plyr-Did": did})  # fmt: skip
    assert status == 201, body
    return await add_track(pool, did, path.stem, audio_url=body["url"]), body["sha256"]


async def add(media: MediaServer, pool: asyncpg.Pool, path: Path, title: str) -> tuple[int, list[Any]]:
    async with pool.acquire() as conn:
        return await add_and_rescan(media.ctx, conn, path, artist="The Label", title=title, isrc=None)


async def test_new_references_rescan_what_they_are_found_in(
    media: MediaServer, pool: asyncpg.Pool, audio: dict[str, Path]
) -> None:
    worker = scan_worker(media)
    ann, ann_sha = await publish(media, pool, ANN, audio["ann"])
    bob, bob_sha = await publish(media, pool, BOB, audio["bob"])
    cat, cat_sha = await publish(media, pool, CAT, audio["cat"])
    assert await media.run_jobs(worker) == 3
    for track in (ann, bob, cat):
        assert (await track_status(pool, track))["status"] == "clear"

    ref, rescans = await add(media, pool, audio["p1.wav"], "One")
    [(found, outcome)] = rescans
    assert found.sha256 == ann_sha and abs(found.offset_s) <= 0.5 and found.length_s > 35
    assert outcome.status == "flagged"
    [m] = outcome.matches
    assert m["reference_id"] == ref and abs(m["offset_s"]) <= 0.5 and m["length_s"] > 35
    assert (await track_status(pool, ann))["status"] == "flagged"
    assert len(await scans(pool, bob_sha)) == 1 and len(await scans(pool, cat_sha)) == 1  # not rescanned

    # the pitched copy is found through the reference's speed variants, and flagged by its rescan
    ref3, rescans = await add(media, pool, audio["p3.wav"], "Three")
    [(found, outcome)] = rescans
    assert found.sha256 == cat_sha and outcome.status == "flagged"
    [m] = outcome.matches
    assert m["reference_id"] == ref3 and abs(m["offset_s"]) <= 0.5 and abs(m["reference_offset_s"]) <= 0.5

    # the same recording again: the same reference, nothing scanned again
    again, rescans = await add(media, pool, audio["p1.wav"], "One again")
    assert again == ref and rescans == []
    assert len(await scans(pool, ann_sha)) == 2


async def test_decisions_carry_over_to_rescans(media: MediaServer, pool: asyncpg.Pool, audio: dict[str, Path]) -> None:
    worker = scan_worker(media)
    ann, ann_sha = await publish(media, pool, ANN, audio["ann"])
    assert await media.run_jobs(worker) == 1
    ref, [(_, flagged)] = await add(media, pool, audio["p1.wav"], "One")
    async with pool.acquire() as conn:
        await resolve_scan(conn, None, scan_id=flagged.scan_id, resolution="false_positive", note="public domain",
                           reviewer="cli:test")  # fmt: skip
    st = await track_status(pool, ann)
    assert (st["status"], st["reviewed"], st["resolution"]) == ("flagged", True, "false_positive")

    # a rescan finds the same reference: recorded, marked as decided, not in the queue again
    await store.request_scan(pool, ann_sha, force=True)
    assert await media.run_jobs(worker) == 1
    last = (await scans(pool, ann_sha))[-1]
    assert last["status"] == "flagged" and last["id"] != flagged.scan_id
    [m] = last["matches"]
    review_id = await pool.fetchval("SELECT id FROM copyright_reviews WHERE scan_id = $1", flagged.scan_id)
    assert m["reference_id"] == ref and m["decided"] == {"review_id": review_id, "resolution": "false_positive"}
    st = await track_status(pool, ann)
    assert (st["status"], st["scan_id"], st["reviewed"]) == ("flagged", last["id"], True)
    async with pool.acquire() as conn:
        queue, _ = await list_scans(conn, limit=10, status="flagged", unreviewed=True)
        assert queue == []
        [view] = [v for v in (await list_scans(conn, limit=10, status="flagged"))[0] if v["id"] == last["id"]]
        assert view["matches"][0]["decidedReviewId"] == review_id
        assert view["matches"][0]["decidedResolution"] == "false_positive"
        assert f"decided before: false_positive (review {review_id})" in render(view)

    # original_artist: ann is allow-listed for the reference; dan's copy of it is still flagged
    async with pool.acquire() as conn:
        done = await resolve_scan(conn, None, scan_id=last["id"], resolution="original_artist",
                                  note="ann wrote it", reviewer="cli:test")  # fmt: skip
    assert done.allowlisted == [ref]
    await store.request_scan(pool, ann_sha, force=True)
    assert await media.run_jobs(worker) == 1
    assert (await scans(pool, ann_sha))[-1]["status"] == "clear"
    assert (await track_status(pool, ann))["status"] == "clear"
    dan, dan_sha = await publish(media, pool, DAN, audio["dan"])
    assert await media.run_jobs(worker) == 1
    [dan_scan] = await scans(pool, dan_sha)
    assert dan_scan["status"] == "flagged"
    assert ref in {m["reference_id"] for m in dan_scan["matches"]}  # not allow-listed for dan
    assert ann_sha in {m["audio"] for m in dan_scan["matches"]}  # and a copy of ann's audio
    assert (await track_status(pool, dan))["status"] == "flagged"

    # the allow-list names the reference: it cannot be removed under it
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await remove_reference(conn, ref)
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute("INSERT INTO copyright_allowlist (artist_did, reference_id) VALUES ($1, 999999)", DAN)


async def test_a_scan_during_a_catalog_add_cannot_miss_the_reference(
    media: MediaServer, pool: asyncpg.Pool, audio: dict[str, Path]
) -> None:
    """A scan that matched before the reference was committed, and committed after the reverse
    lookup would have run, would miss it both ways: the catalog lock orders them."""
    _, body = await media.upload("audio", audio["ann"].read_bytes(),  # noqa: ASYNC240 - a small test file
                                 headers={"Authorization": f"Bearer {SERVER_KEY}", "X-Plyr-Did": ANN})  # fmt: skip
    sha = body["sha256"]
    fp = await fingerprint_file(audio["ann"], speeds=QUERY_SPEEDS)
    scan_conn = await pool.acquire()
    try:
        tx = scan_conn.transaction()
        await tx.start()
        # the scan's matching transaction, as scan.py runs it: lock, store, match (nothing yet), row
        await store.lock_catalog(scan_conn, shared=True)
        fid = await store_fingerprint(scan_conn, track_uri=None, reference_id=None, fp=fp, audio_sha256=sha)
        assert [m.fingerprint_id for m in await find_matches(scan_conn, fp)] == [fid]  # itself: no reference yet
        await store.record_scan(scan_conn, audio=await store.audio_object(pool, sha), sha256=sha, track_uri=None,
                                job_id=None, attempt=1, status="clear", started_at=datetime.now(UTC),
                                engine=fp.engine, fingerprint_id=fid)  # fmt: skip
        adding = asyncio.create_task(add(media, pool, audio["p1.wav"], "One"))
        await asyncio.sleep(1.0)
        assert not adding.done()  # the reference waits for the scan's transaction
        await tx.commit()
    finally:
        await pool.release(scan_conn)
    ref, [(found, outcome)] = await asyncio.wait_for(adding, 120)
    assert found.sha256 == sha and outcome.status == "flagged"
    assert [m["reference_id"] for m in outcome.matches] == [ref]
