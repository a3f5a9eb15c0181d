"""The same audio uploaded again by another artist (issue 16), with real fingerprints: the exact
bytes (one media object, a second uploader, or a blob of them on the copier's PDS) and a
re-encoded copy are flagged against the first artist's track, with the copy's tracks only; the
first artist's own re-uploads are not, and a rescan of the original does not flag it against
its copies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from appview.moderation.copyright import get_scan, resolve_scan
from appview.moderation.copyright_cli import render
from integration.media.conftest import SERVER_KEY, MediaServer, media_settings, running_media_server
from integration.media.test_copyright_scans import add_track, scan_worker, scans, track_status
from integration.media.test_media_mirror import FakePds, pds, resolver  # noqa: F401 - fixtures
from media import jobs
from media.copyright import store
from media.mirror import run_mirror
from protocol.identity import IdentityResolver
from tests.support import audio_corpus as ac

ANN = "did:plc:annfirstartist00000000000"
BOB = "did:plc:bobexactcopy0000000000000"
CAT = "did:plc:catreencodes0000000000000"


@pytest.fixture(scope="module")
def piece(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("copies")
    wav = ac.make_piece(folder / "p.wav", 21, 45)
    return {
        "original": ac.encode(wav, folder / "p-192.mp3", filters="aresample=44100", codec=ac.MP3_192K),
        "ann-again": ac.encode(wav, folder / "p-128.mp3", filters="aresample=44100", codec=ac.MP3_128K),
        "cat-copy": ac.encode(wav, folder / "p-96.mp3", filters="aresample=44100,volume=0.8",
                              codec=("-c:a", "libmp3lame", "-b:a", "96k")),  # fmt: skip
    }


@pytest.fixture
async def media(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[MediaServer]:
    settings = media_settings(tmp_path / "data", copyright_scan=True)
    async with running_media_server(pool, database_url, settings) as (_, server):
        yield server


async def upload(media: MediaServer, did: str, path: Path) -> tuple[int, dict[str, Any]]:
    return await media.upload("audio", path.read_bytes(),  # noqa: ASYNC240 - a small test file
                              headers={"Authorization": f"Bearer {SERVER_KEY}", "X-Plyr-Did": did})  # fmt: skip


async def test_the_same_audio_by_another_artist_is_flagged_against_the_first(
    media: MediaServer, pool: asyncpg.Pool, piece: dict[str, Path]
) -> None:
    worker = scan_worker(media)
    status, first = await upload(media, ANN, piece["original"])
    assert status == 201
    sha = first["sha256"]
    ann_track = await add_track(pool, ANN, "original", audio_url=first["url"])
    assert await media.run_jobs(worker) == 1
    assert [r["status"] for r in await scans(pool, sha)] == ["clear"]

    # ann uploads the same bytes again: hers, nothing to scan
    status, again = await upload(media, ANN, piece["original"])
    assert status == 200 and again["sha256"] == sha
    assert await media.run_jobs(worker) == 0

    # bob uploads the exact bytes (the same object): a second artist, scanned again
    status, bobs = await upload(media, BOB, piece["original"])
    assert status == 200 and bobs["sha256"] == sha and bobs["url"] == first["url"]
    bob_track = await add_track(pool, BOB, "mine-now", audio_url=bobs["url"])
    assert await media.run_jobs(worker) == 1
    row = (await scans(pool, sha))[-1]
    assert row["status"] == "flagged"
    [copy] = row["matches"]
    assert (copy["copier"], copy["first_artist"], copy["track_uri"], copy["audio"]) == (BOB, ANN, ann_track, sha)
    assert copy["offset_s"] == 0 and copy["similarity"] == 1.0 and 40 < copy["length_s"] < 46
    bob_status, ann_status = await track_status(pool, bob_track), await track_status(pool, ann_track)
    assert bob_status["status"] == "flagged" and [m["copier"] for m in bob_status["matches"]] == [BOB]
    assert ann_status["status"] == "clear" and ann_status["matches"] == []  # the first artist's track is not

    # a review's default tracks are bob's only (a violation would not take ann's down)
    async with pool.acquire() as conn:
        done = await resolve_scan(conn, None, scan_id=row["id"], resolution="false_positive", note="checking",
                                  reviewer="cli:test")  # fmt: skip
    assert done.review["trackUris"] == [bob_track]
    async with pool.acquire() as conn:
        view = await get_scan(conn, row["id"])
    assert view is not None and view["matches"][0]["copier"] == BOB
    assert f"matches the same audio as track {ann_track}, brought later by {BOB} at 0:00" in render(view)

    # ann's own re-encode: a different object, her audio again: clear
    status, ann2 = await upload(media, ANN, piece["ann-again"])
    assert status == 201 and ann2["sha256"] != sha
    await add_track(pool, ANN, "remaster", audio_url=ann2["url"])
    assert await media.run_jobs(worker) == 1
    assert [r["status"] for r in await scans(pool, ann2["sha256"])] == ["clear"]

    # cat's re-encode (other bitrate, quieter): flagged against ann's audio, from its start
    status, cats = await upload(media, CAT, piece["cat-copy"])
    assert status == 201
    cat_track = await add_track(pool, CAT, "cover", audio_url=cats["url"])
    assert await media.run_jobs(worker) == 1
    [cat_row] = await scans(pool, cats["sha256"])
    assert cat_row["status"] == "flagged", cat_row["matches"]
    assert {m["audio"] for m in cat_row["matches"]} <= {sha, ann2["sha256"]}
    assert any(m["audio"] == sha and m["track_uri"] == ann_track for m in cat_row["matches"])
    for m in cat_row["matches"]:
        assert abs(m["offset_s"]) <= 0.5 and abs(m["reference_offset_s"]) <= 0.5 and m["length_s"] > 40
    assert (await track_status(pool, cat_track))["status"] == "flagged"

    # scanning ann's original again: cat's later copy does not flag it; bob's copy is still there
    await store.request_scan(pool, sha, force=True)
    assert await media.run_jobs(worker) == 1
    last = (await scans(pool, sha))[-1]
    assert [m.get("copier") for m in last["matches"]] == [BOB]
    assert (await track_status(pool, ann_track))["status"] == "clear"


async def test_the_same_bytes_as_another_artists_pds_blob_are_flagged(
    media: MediaServer, pool: asyncpg.Pool, piece: dict[str, Path], pds: FakePds, resolver: IdentityResolver  # noqa: F811
) -> None:
    """The copy arrives as a blob on the copier's PDS (mirrored by media): the same object,
    a new artist for it, scanned again."""
    worker = scan_worker(media)
    status, first = await upload(media, ANN, piece["original"])
    sha = first["sha256"]
    ann_track = await add_track(pool, ANN, "original", audio_url=first["url"])
    assert await media.run_jobs(worker) == 1
    cid = pds.add_blob(piece["original"].read_bytes())
    blob_track = await add_track(pool, pds.did, "blob", blob_cid=cid)
    await jobs.enqueue_blob_mirror(pool, track_uri=blob_track, did=pds.did, blob_cid=cid, mime_type="audio/mpeg")
    assert await media.run_jobs(media.worker(handlers={"mirror": run_mirror}, resolver=resolver)) == 1
    assert await media.run_jobs(worker) == 1
    row = (await scans(pool, sha))[-1]
    assert row["status"] == "flagged" and [(m["copier"], m["track_uri"]) for m in row["matches"]] == [(pds.did, ann_track)]
    assert (await track_status(pool, blob_track))["status"] == "flagged"
    assert (await track_status(pool, ann_track))["status"] == "clear"
