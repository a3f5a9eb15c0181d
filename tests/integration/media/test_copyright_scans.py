"""Copyright scans of the audio media holds (media/copyright/): an upload and a PDS blob copy are
each scanned by a `copyright_scan` job into `copyright_scans` rows (`clear`, `flagged`, or
`error` retried with backoff, a row per attempt), on local and S3 storage; per track,
`copyright_track_status` never reads an unscanned or failed track as clear.

The fingerprint API is media/fingerprint/'s; its matcher is replaced here by one returning
chosen matches (the matching itself is tested with the fingerprint package)."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from unit.media.samples import FFMPEG

from integration.media.conftest import (
    BUCKET,
    MediaServer,
    make_s3,
    media_settings,
    running_media_server,
)
from integration.media.test_media_mirror import FakePds, pds, resolver  # noqa: F401 - fixtures
from media import fingerprint, jobs
from media.copyright import store
from media.copyright.scan import run_copyright_scan
from media.fingerprint import Match
from media.mirror import run_mirror
from media.storage import LocalStorage
from protocol.identity import IdentityResolver

ARTIST = "did:plc:testartist000000000000000"  # the uploader of MediaServer.upload
OTHER = "did:plc:otherartist00000000000000"


def make_clip(out: Path, seconds: float, seed: int) -> Path:
    """Noise of `seconds` as a 96k MP3 (different seeds: unrelated audio)."""
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"anoisesrc=d={seconds}:a=0.3:seed={seed}:sample_rate=44100", "-ac", "2",
         "-c:a", "libmp3lame", "-b:a", "96k", str(out)],
        check=True,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("copyright-clips")
    return {"a": make_clip(folder / "a.mp3", 15, 1), "b": make_clip(folder / "b.mp3", 25, 2)}


@pytest.fixture
async def media(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[MediaServer]:
    settings = media_settings(tmp_path / "data", copyright_scan=True)
    async with running_media_server(pool, database_url, settings) as (_, server):
        yield server


def scan_worker(media: MediaServer, **kw: Any) -> Any:
    return media.worker(handlers={"copyright_scan": run_copyright_scan}, **kw)


async def add_track(pool: asyncpg.Pool, did: str, rkey: str, *, audio_url: str | None = None,
                    blob_cid: str | None = None) -> str:  # fmt: skip
    uri = f"at://{did}/fm.plyr.track/{rkey}"
    now = datetime.now(UTC)
    await pool.execute(
        """INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, file_type, audio_url, audio_blob_cid,
                               record, created_at, sort_at)
           VALUES ($1, $2, $3, 'bafyreicid', '3k2a', 'T', 'A', 'mp3', $4, $5, '{}'::jsonb, $6, $6)""",
        uri, did, rkey, audio_url, blob_cid, now,
    )  # fmt: skip
    return uri


async def scans(pool: asyncpg.Pool, sha: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM copyright_scans WHERE sha256 = $1 ORDER BY id", sha)


async def track_status(pool: asyncpg.Pool, uri: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM copyright_track_status WHERE track_uri = $1", uri)
    assert row is not None
    return row


async def scan_job(pool: asyncpg.Pool, sha: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT * FROM media_jobs WHERE kind = 'copyright_scan' AND dedupe_key = $1 ORDER BY id DESC LIMIT 1", sha
    )
    assert row is not None
    return row


async def test_an_upload_is_scanned_and_its_track_reads_clear(
    media: MediaServer, pool: asyncpg.Pool, clips: dict[str, Path]
) -> None:
    status, body = await media.upload("audio", clips["a"].read_bytes())
    assert status == 201, body
    sha = body["sha256"]
    job = await scan_job(pool, sha)
    assert job["status"] == "queued" and job["owner"] == ARTIST and job["payload"]["sha256"] == sha
    track = await add_track(pool, ARTIST, "one", audio_url=body["url"])
    elsewhere = await add_track(pool, ARTIST, "two", audio_url="https://cdn.example/x.mp3")
    assert (await track_status(pool, track))["status"] == "scanning"
    assert (await track_status(pool, elsewhere))["status"] == "unscanned"

    assert await media.run_jobs(scan_worker(media)) == 1
    [row] = await scans(pool, sha)
    assert (row["status"], row["attempt"], row["matches"], row["error"]) == ("clear", 1, [], None)
    assert row["engine"] == fingerprint.ENGINE and row["fingerprint_id"] is not None
    assert row["job_id"] == job["id"] and row["track_uri"] == track and row["next_attempt_at"] is None
    assert 11 < row["duration_s"] < 16
    assert row["storage_key"] == await pool.fetchval("SELECT storage_key FROM media_objects WHERE sha256 = $1", sha)
    done = await media.job(job["id"])
    assert done.status == "done" and done.result == {"scanId": row["id"], "status": "clear", "matches": 0,
                                                     "trackUri": track}  # fmt: skip
    st = await track_status(pool, track)
    assert (st["status"], st["sha256"], st["scan_id"], st["job_pending"]) == ("clear", sha, row["id"], False)
    assert (await track_status(pool, elsewhere))["status"] == "unscanned"

    # the same bytes again: scanned already, no second job
    status, again = await media.upload("audio", clips["a"].read_bytes())
    assert status == 200 and again["sha256"] == sha
    assert await pool.fetchval("SELECT count(*) FROM media_jobs WHERE kind = 'copyright_scan'") == 1


async def test_matches_are_flagged_without_the_audio_itself_and_allowed_artists(
    media: MediaServer, pool: asyncpg.Pool, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, body = await media.upload("audio", clips["b"].read_bytes())
    sha = body["sha256"]
    track = await add_track(pool, ARTIST, "mine", audio_url=body["url"])
    other_track = await add_track(pool, OTHER, "theirs", audio_url="https://cdn.example/theirs.mp3")
    own_other = await add_track(pool, ARTIST, "again", audio_url="https://cdn.example/again.mp3")
    await pool.execute(
        "INSERT INTO copyright_references (id, artist, title, sha256, duration_s) OVERRIDING SYSTEM VALUE "
        "VALUES (7, 'Label', 'Seven', 'sha-7', 60), (8, 'Artist', 'Eight', 'sha-8', 60)"
    )
    await pool.execute("INSERT INTO copyright_allowlist (artist_did, reference_id) VALUES ($1, 8)", ARTIST)
    asked: list[tuple[str | None, float]] = []

    async def matches(conn: Any, fp: fingerprint.Fingerprint, *, exclude_track_uri: str | None = None,
                      min_length_s: float = 10.0) -> list[Match]:  # fmt: skip
        asked.append((exclude_track_uri, min_length_s))
        assert fp.values and fp.duration_s > 20
        return [
            Match(901, 7, None, offset_s=12.5, reference_offset_s=60.0, length_s=11.0, similarity=0.91),
            Match(902, 8, None, offset_s=1.0, reference_offset_s=0.0, length_s=20.0, similarity=0.99),  # allowed
            Match(903, None, track, offset_s=0.0, reference_offset_s=0.0, length_s=25.0, similarity=1.0),  # itself
            Match(904, None, other_track, offset_s=2.0, reference_offset_s=30.0, length_s=10.5, similarity=0.8),
            Match(905, None, own_other, offset_s=3.0, reference_offset_s=0.0, length_s=12.0, similarity=0.9),
        ]

    monkeypatch.setattr(fingerprint, "find_matches", matches)
    assert await media.run_jobs(scan_worker(media)) == 1
    assert asked == [(track, 10.0)]
    [row] = await scans(pool, sha)
    assert row["status"] == "flagged" and row["track_uri"] == track
    assert row["matches"] == [
        {"reference_id": None, "track_uri": other_track, "audio": None, "fingerprint_id": 904, "offset_s": 2.0,
         "reference_offset_s": 30.0, "length_s": 10.5, "similarity": 0.8},
        {"reference_id": 7, "track_uri": None, "audio": None, "fingerprint_id": 901, "offset_s": 12.5,
         "reference_offset_s": 60.0, "length_s": 11.0, "similarity": 0.91},
    ]  # fmt: skip
    assert (await track_status(pool, track))["status"] == "flagged"
    assert (await scan_job(pool, sha))["result"]["status"] == "flagged"

    # scanning again (`plyr moderation scan --all`) reuses the audio's fingerprint
    await store.request_scan(pool, sha, force=True)
    assert await media.run_jobs(scan_worker(media)) == 1
    first, second = await scans(pool, sha)
    assert second["fingerprint_id"] == first["fingerprint_id"] and second["attempt"] == 1


async def test_scan_errors_are_rows_retried_with_backoff_until_the_bound(
    media: MediaServer, pool: asyncpg.Pool, clips: dict[str, Path]
) -> None:
    data = clips["a"].read_bytes()
    _, body = await media.upload("audio", data)
    sha = body["sha256"]
    track = await add_track(pool, ARTIST, "one", audio_url=body["url"])
    assert isinstance(media.ctx.storage, LocalStorage)
    stored = media.ctx.storage.path(await pool.fetchval("SELECT storage_key FROM media_objects WHERE sha256 = $1", sha))
    # The object went bad on disk: its first bytes still say MP3, the rest is garbage, so the
    # fingerprinting itself (ffmpeg) fails rather than the type check in front of it.
    stored.write_bytes(data[:2048] + b"\x00garbage, not audio" * 4000)

    worker = scan_worker(media)
    for attempt in range(1, store.SCAN_MAX_ATTEMPTS + 1):
        assert await media.run_jobs(worker) == 1
        row = (await scans(pool, sha))[-1]
        assert (row["status"], row["attempt"], row["matches"]) == ("error", attempt, [])
        assert row["error"] and row["engine"] is None
        job = await scan_job(pool, sha)
        st = await track_status(pool, track)
        assert (st["status"], st["scan_id"]) == ("error", row["id"])  # never clear
        if attempt < store.SCAN_MAX_ATTEMPTS:
            wait = jobs.backoff_s(attempt)
            assert job["status"] == "queued" and st["job_pending"]
            due = row["next_attempt_at"] - row["finished_at"]
            assert timedelta(seconds=wait - 1) < due < timedelta(seconds=wait + 1)
            assert abs((job["run_after"] - row["next_attempt_at"]).total_seconds()) < 1
            assert await media.run_jobs(worker) == 0  # not before its time
            await pool.execute("UPDATE media_jobs SET run_after = now() WHERE id = $1", job["id"])
        else:
            assert job["status"] == "failed" and "failed" in job["error"]
            assert row["next_attempt_at"] is None and not st["job_pending"]
    assert len(await scans(pool, sha)) == store.SCAN_MAX_ATTEMPTS

    # the object missing from storage: an error too; back in place, asked again: clear
    stored.unlink()
    await store.request_scan(pool, sha)
    assert await media.run_jobs(worker) == 1
    row = (await scans(pool, sha))[-1]
    assert row["status"] == "error" and "no such file" in row["error"]
    stored.write_bytes(data)
    await pool.execute("UPDATE media_jobs SET run_after = now() WHERE kind = 'copyright_scan' AND status = 'queued'")
    assert await media.run_jobs(worker) == 1
    assert [r["status"] for r in await scans(pool, sha)][-2:] == ["error", "clear"]
    assert (await track_status(pool, track))["status"] == "clear"


async def test_a_scan_of_audio_we_do_not_hold_fails_once(media: MediaServer, pool: asyncpg.Pool) -> None:
    job_id = await store.request_scan(pool, "ab" * 32)
    assert await media.run_jobs(scan_worker(media)) == 1
    [row] = await scans(pool, "ab" * 32)
    assert row["status"] == "error" and "no stored audio" in row["error"] and row["next_attempt_at"] is None
    assert (await media.job(int(job_id or 0))).status == "failed"


async def test_scans_read_from_s3(
    moto_url: str, pool: asyncpg.Pool, database_url: str, tmp_path: Path, clips: dict[str, Path]
) -> None:
    storage = make_s3(moto_url)
    client = await storage.client()
    await client.create_bucket(Bucket=BUCKET)
    settings = media_settings(tmp_path / "data", storage="s3", s3_bucket=BUCKET, copyright_scan=True)
    async with running_media_server(pool, database_url, settings,
                                    storage_factory=lambda st: make_s3(moto_url, media_url=st.public_url)) as (_, media):  # fmt: skip
        _, body = await media.upload("audio", clips["a"].read_bytes())
        sha = body["sha256"]
        assert await media.run_jobs(scan_worker(media)) == 1
        [row] = await scans(pool, sha)
        assert row["status"] == "clear" and 11 < row["duration_s"] < 16
        assert list((tmp_path / "data" / "tmp").glob("*")) == []  # the temporary copy is gone
        await storage.delete(row["storage_key"])
        await store.request_scan(pool, sha, force=True)
        assert await media.run_jobs(scan_worker(media)) == 1
        row = (await scans(pool, sha))[-1]
        assert row["status"] == "error" and row["storage_key"] in row["error"]
        assert (await scan_job(pool, sha))["status"] == "queued"  # retried
    await storage.close()


async def test_a_pds_blob_copy_is_scanned_for_its_track(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, clips: dict[str, Path], pds: FakePds,  # noqa: F811
    resolver: IdentityResolver,  # noqa: F811
) -> None:
    data = clips["b"].read_bytes()
    cid = pds.add_blob(data)
    track = await add_track(pool, pds.did, "blob", blob_cid=cid)
    settings = dataclasses.replace(media_settings(tmp_path / "data"), copyright_scan=True)
    async with running_media_server(pool, database_url, settings) as (_, media):
        await jobs.enqueue_blob_mirror(pool, track_uri=track, did=pds.did, blob_cid=cid, mime_type="audio/mpeg")
        assert (await track_status(pool, track))["status"] == "unscanned"  # nothing held yet
        assert await media.run_jobs(media.worker(handlers={"mirror": run_mirror}, resolver=resolver)) == 1
        sha = (await pool.fetchrow("SELECT sha256 FROM media_objects WHERE blob_cid = $1", cid))["sha256"]
        job = await scan_job(pool, sha)
        assert job["payload"]["track_uri"] == track and job["owner"] == pds.did
        assert (await track_status(pool, track))["status"] == "scanning"
        assert await media.run_jobs(scan_worker(media)) == 1
        [row] = await scans(pool, sha)
        assert (row["status"], row["track_uri"], row["blob_cid"]) == ("clear", track, cid)
        assert (await track_status(pool, track))["status"] == "clear"
        assert [r["track_uri"] for r in await pool.fetch("SELECT * FROM copyright_audio_tracks($1)", sha)] == [track]
