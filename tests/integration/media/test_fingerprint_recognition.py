"""The external recognition engine of copyright scans (media/copyright/recognition.py) against a
local stand-in that speaks AuDD's API (tests/support/audd_standin.py): a recognition is a
`flagged` row of its own engine that flags a locally clear track; no match is `clear` and
clears nothing; an error answer or an outage is an `error` row of that engine, retried by the
job (asking only the service again), which never turns the local `clear` into anything else."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from unit.media.samples import FFMPEG

from appview.moderation.copyright import list_scans
from appview.moderation.copyright_cli import render
from integration.media.conftest import MediaServer, media_settings, running_media_server
from integration.media.test_copyright_scans import (  # noqa: F401
    add_track,
    clips,
    scan_job,
    scan_worker,
    scans,
    track_status,
)
from media.copyright import store
from media.copyright.recognition import AuddClient, RecognitionError, parse_answer
from tests.support.audd_standin import AuddStandIn, Error, HttpStatus, song

ARTIST = "did:plc:testartist000000000000000"  # the uploader of MediaServer.upload


@pytest.fixture
async def standin() -> AsyncIterator[AuddStandIn]:
    async with AuddStandIn() as server:
        yield server


@pytest.fixture
async def media(pool: asyncpg.Pool, database_url: str, tmp_path: Path, standin: AuddStandIn) -> AsyncIterator[MediaServer]:
    settings = media_settings(tmp_path / "data", copyright_scan=True, recognition_url=standin.url,
                              recognition_api_key=standin.api_token, recognition_clip_s=12.0)  # fmt: skip
    async with running_media_server(pool, database_url, settings) as (_, server):
        yield server


def duration_of(data: bytes, tmp: Path) -> float:
    tmp.write_bytes(data)
    out = subprocess.run([FFMPEG, "-hide_banner", "-i", str(tmp), "-f", "null", "-"], capture_output=True, text=True)
    stamp = out.stderr.rsplit("time=", 1)[1].split()[0]
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


async def test_a_recognition_flags_a_locally_clear_track(
    media: MediaServer, pool: asyncpg.Pool, standin: AuddStandIn, clips: dict[str, Path], tmp_path: Path  # noqa: F811
) -> None:
    standin.answers.append(song("Famous Band", "Big Hit", timecode="01:02"))
    _, body = await media.upload("audio", clips["b"].read_bytes())  # 25 s
    sha = body["sha256"]
    track = await add_track(pool, ARTIST, "one", audio_url=body["url"])
    assert await media.run_jobs(scan_worker(media)) == 1
    local, ext = await scans(pool, sha)
    assert (local["status"], local["external"], local["engine"]) == ("clear", False, "chromaprint-alg1-ffmpeg-mono")
    assert (ext["status"], ext["external"], ext["engine"]) == ("flagged", True, f"audd:{standin.url[7:-1]}")
    [m] = ext["matches"]
    assert m["recognition"] == {"artist": "Famous Band", "title": "Big Hit", "album": "Big Hit",
                                "release_date": "2019-05-17", "label": "A Label", "song_link": "https://lis.tn/standin"}
    assert m["reference_offset_s"] == 62.0 and abs(m["offset_s"] - 25 / 3) < 0.5 and m["length_s"] == 12.0
    st = await track_status(pool, track)
    assert (st["status"], st["scan_id"]) == ("flagged", local["id"])
    assert [x.get("recognition", {}).get("title") for x in st["matches"]] == ["Big Hit"]
    # what the service got: the documented fields and a 12 s clip from a third of the way in
    [req] = standin.requests
    assert req.fields == {"api_token": standin.api_token} and req.file is not None
    assert 11.5 < duration_of(req.file, tmp_path / "clip.mp3") < 12.5
    job = await scan_job(pool, sha)
    assert job["status"] == "done" and job["result"]["external"]["status"] == "flagged"
    async with pool.acquire() as conn:
        [view] = [v for v in (await list_scans(conn, limit=10))[0] if v["id"] == ext["id"]]
    assert view["external"] is True and view["matches"][0]["recognition"]["title"] == "Big Hit"
    assert view["matches"][0]["recognition"]["songLink"] == "https://lis.tn/standin"
    assert f"matches recording Famous Band - Big Hit ({ext['engine']}) at 1:02" in render(view)


async def test_no_match_clears_nothing_and_errors_are_that_engines(
    media: MediaServer, pool: asyncpg.Pool, standin: AuddStandIn, clips: dict[str, Path]  # noqa: F811
) -> None:
    standin.answers += [Error(901, "No api_token passed, and the limit was reached."), HttpStatus(503), None]
    _, body = await media.upload("audio", clips["a"].read_bytes())
    sha = body["sha256"]
    track = await add_track(pool, ARTIST, "one", audio_url=body["url"])
    worker = scan_worker(media)
    assert await media.run_jobs(worker) == 1
    local, ext = await scans(pool, sha)
    assert local["status"] == "clear" and (ext["status"], ext["external"]) == ("error", True)
    assert ext["error"].endswith("error 901: No api_token passed, and the limit was reached.")
    assert ext["error"].startswith("audd:") and ext["next_attempt_at"] is not None
    st = await track_status(pool, track)
    assert (st["status"], st["scan_id"]) == ("clear", local["id"])  # the local clear stands, the error is visible
    job = await scan_job(pool, sha)
    assert job["status"] == "queued"  # retried, with backoff

    # the retries ask only the service again (no new local row): an outage, then no match
    for expected in ("error", "clear"):
        await pool.execute("UPDATE media_jobs SET run_after = now() WHERE id = $1", job["id"])
        assert await media.run_jobs(worker) == 1
        rows = await scans(pool, sha)
        assert [r["external"] for r in rows].count(False) == 1
        assert (rows[-1]["status"], rows[-1]["external"]) == (expected, True)
    assert "HTTP 503" in (await scans(pool, sha))[-2]["error"]
    assert (await scan_job(pool, sha))["status"] == "done"
    assert (await track_status(pool, track))["status"] == "clear"

    # an external clear never makes a track clear: after a local error it still reads error
    audio = await store.audio_object(pool, sha)
    now = datetime.now(UTC)
    await store.record_scan(pool, audio=audio, sha256=sha, track_uri=track, job_id=None, attempt=9, status="error",
                            started_at=now, error="ffmpeg failed")  # fmt: skip
    await store.record_scan(pool, audio=audio, sha256=sha, track_uri=track, job_id=None, attempt=9, status="clear",
                            started_at=now, engine="audd:x", external=True)  # fmt: skip
    assert (await track_status(pool, track))["status"] == "error"


async def test_off_by_default_and_the_answer_shapes(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, standin: AuddStandIn, clips: dict[str, Path]  # noqa: F811
) -> None:
    settings = media_settings(tmp_path / "data", copyright_scan=True)
    assert settings.recognition_url is None
    async with running_media_server(pool, database_url, settings) as (_, media):
        _, body = await media.upload("audio", clips["a"].read_bytes())
        assert await media.run_jobs(scan_worker(media)) == 1
        assert [r["external"] for r in await scans(pool, body["sha256"])] == [False]
    assert standin.requests == []

    # the client alone: a wrong token is the service's error 900; the enterprise shape is read
    client = AuddClient(standin.url, "wrong", clip_s=0)
    with pytest.raises(RecognitionError, match="error 900"):
        await client.recognize(clips["a"])
    found = parse_answer({"status": "success", "result": [
        {"offset": "00:24", "songs": [song("A", "One", timecode="00:10", score=87)]},
        {"offset": "01:12", "songs": [song("B", "Two")]},
    ]})  # fmt: skip
    assert [(f.artist, f.offset_s, f.timecode_s, f.score) for f in found] == [("A", 24.0, 10.0, 0.87),
                                                                          ("B", 72.0, 56.0, None)]
    for bad in ({"status": "weird"}, [], {"status": "success", "result": "text"}):
        with pytest.raises(RecognitionError):
            parse_answer(bad)
    unreachable = AuddClient("http://127.0.0.1:9/", "t")  # the discard port: nothing listens
    with pytest.raises(RecognitionError, match="cannot reach"):
        await unreachable.recognize(clips["a"])
