"""The review of copyright scans, end to end: an upload is scanned by the media job (the matcher
replaced by one returning chosen matches), a moderator lists the flagged scan over XRPC and
resolves it: a violation is our labeler's `!takedown` of the track with an audit row, in the
review's transaction, and the track leaves the AppView once the label is in; `original_artist`
allow-lists the artist for the reference (a later scan is clear); `false_positive` records the
decision only. Moderator auth as the other fm.plyr.moderation.* methods. And `plyr moderation
review` on the same data."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from appview.labeler.store import LabelSigner
from core.settings import LabelSettings
from integration.media.conftest import SERVER_KEY, MediaServer, media_settings, running_media_server
from integration.media.test_copyright_scans import clips, scan_worker  # noqa: F401 - fixture
from media import fingerprint
from media.copyright import store
from media.fingerprint import Match
from protocol.crypto import PrivateKey
from protocol.labels import parse_label
from tests.integration.appview.conftest import SERVICE_DID
from tests.integration.appview.test_appview_labels import Labels, get
from tests.integration.moderation.conftest import NS, ModerationApp, call, own_labels

World = Any  # the `world` fixture (tests/integration/appview/conftest.World)
ROOT = Path(__file__).resolve().parents[3]
OURS = LabelSettings(labelers=(SERVICE_DID,), moderation_labelers=(SERVICE_DID,), default_labelers=())


@pytest.fixture
async def media(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[MediaServer]:
    settings = media_settings(tmp_path / "data", copyright_scan=True)
    async with running_media_server(pool, database_url, settings) as (_, server):
        yield server


@pytest.fixture
async def matcher(monkeypatch: pytest.MonkeyPatch, pool: asyncpg.Pool) -> list[Match]:
    """What the fingerprint matcher finds for every scan (tests set it); catalog entry 7 (REF's)
    exists."""
    await pool.execute(
        "INSERT INTO copyright_references (id, artist, title, sha256, duration_s) OVERRIDING SYSTEM VALUE "
        "VALUES (7, 'A Label', 'A Single', 'sha-of-7', 180)"
    )
    found: list[Match] = []

    async def find_matches(conn: Any, fp: Any, *, exclude_track_uri: str | None = None,
                           min_length_s: float = 10.0, **kw: Any) -> list[Match]:  # fmt: skip
        return list(found)

    monkeypatch.setattr(fingerprint, "find_matches", find_matches)
    return found


async def upload_track(media: MediaServer, world: World, who: Any, data: bytes, title: str) -> tuple[str, str]:
    """`who` uploads `clip` to media and publishes a track that plays it: (track uri, sha-256)."""
    status, body = await media.upload("audio", data,
                                      headers={"Authorization": f"Bearer {SERVER_KEY}", "X-Plyr-Did": who.did})  # fmt: skip
    assert status in (200, 201), body
    uri = await world.track(who, title, audioUrl=body["url"])
    return uri, body["sha256"]


REF = Match(901, 7, None, offset_s=40.25, reference_offset_s=3.25, length_s=12.0, similarity=0.934)


async def test_review_flow_from_an_upload_to_a_takedown(
    media: MediaServer, world: World, pool: asyncpg.Pool, moderation_app: ModerationApp, signer: LabelSigner,
    clips: dict[str, Path], matcher: list[Match],  # noqa: F811
) -> None:
    mod = await world.account("mod")
    ann = await world.account("ann")
    fan = await world.account("fan")
    track, sha = await upload_track(media, world, ann, clips["b"].read_bytes(), "not mine")
    matcher.append(REF)
    assert await media.run_jobs(scan_worker(media)) == 1
    client = await moderation_app(moderators=(mod.did,), labels=OURS)
    for name, body in (("listScans", None), ("resolveScan", {"scan": 1, "resolution": "false_positive", "note": "n"})):
        await call(client, None, NS + name, body, status=401, error="AuthRequired")
        await call(client, fan, NS + name, body, status=403, error="Forbidden")
        await call(client, mod, NS + name, body, status=401, headers=mod.auth(NS + "listActions"))

    queue = await call(client, mod, NS + "listScans", params={"status": "flagged", "unreviewed": "true"})
    [scan] = queue["scans"]
    assert (scan["audio"], scan["status"], scan["attempt"], scan["tracks"], scan["trackUri"]) == (
        sha, "flagged", 1, [track], track)
    assert scan["uploadedBy"] == ann.did and scan["engine"] == fingerprint.ENGINE and "review" not in scan
    assert scan["matches"] == [{"referenceId": 7, "offsetMs": 40250, "referenceOffsetMs": 3250, "lengthMs": 12000,
                                "similarity": 934, "fingerprintId": 901,
                                "reference": {"artist": "A Label", "title": "A Single"}}]  # fmt: skip
    assert (await get(client, "fm.plyr.feed.getTrack", uri=track))["track"]["uri"] == track

    done = await call(client, mod, NS + "resolveScan",
                      {"scan": scan["id"], "resolution": "violation", "note": "a label's single"})  # fmt: skip
    review = done["review"]
    assert (review["resolution"], review["trackUris"], review["reviewer"], review["note"]) == (
        "violation", [track], mod.did, "a label's single")
    [action] = done["actions"]
    assert (action["action"], action["subject"], action["labels"]) == ("takedown", track, ["!takedown"])
    assert action["reason"] == f"copyright (scan {scan['id']}): a label's single" and review["actionIds"] == [action["id"]]
    [label] = done["labels"]
    assert parse_label(label, encoding="json").verify(signer.key.public_key())
    [stored] = await own_labels(pool, track)
    assert (stored.val, stored.neg, stored.src) == ("!takedown", False, SERVICE_DID)
    assert await pool.fetchval("SELECT count(*) FROM moderation_actions WHERE subject = $1", track) == 1

    # the queue is empty; the scan shows its review
    assert (await call(client, mod, NS + "listScans", params={"unreviewed": "true"}))["scans"] == []
    [reviewed] = (await call(client, mod, NS + "listScans", params={"status": "flagged"}))["scans"]
    assert reviewed["review"] == review
    status = await pool.fetchrow("SELECT status, reviewed, resolution FROM copyright_track_status WHERE track_uri = $1",
                                 track)  # fmt: skip
    assert tuple(status) == ("flagged", True, "violation")

    # our labeler's label reaches the index (the label subscriber's job): the track is gone
    await Labels(pool).put(SERVICE_DID, track, "!takedown")
    await get(client, "fm.plyr.feed.getTrack", 404, uri=track)


async def test_original_artists_are_allow_listed_and_false_positives_recorded(
    media: MediaServer, world: World, pool: asyncpg.Pool, moderation_app: ModerationApp,
    clips: dict[str, Path], matcher: list[Match],  # noqa: F811
) -> None:
    mod = await world.account("mod")
    ann = await world.account("ann")
    bob = await world.account("bob")
    own, own_sha = await upload_track(media, world, ann, clips["a"].read_bytes(), "my own song")
    other, _ = await upload_track(media, world, bob, clips["b"].read_bytes(), "sounds alike")
    matcher.append(REF)
    assert await media.run_jobs(scan_worker(media)) == 2
    client = await moderation_app(moderators=(mod.did,), labels=OURS)
    scans = (await call(client, mod, NS + "listScans", params={"status": "flagged"}))["scans"]
    by_track = {s["trackUri"]: s["id"] for s in scans}

    done = await call(client, mod, NS + "resolveScan",
                      {"scan": by_track[own], "resolution": "original_artist", "note": "ann wrote it"})  # fmt: skip
    assert done["allowlisted"] == [7] and done["actions"] == [] and done["labels"] == []
    assert [tuple(r) for r in await pool.fetch("SELECT artist_did, reference_id FROM copyright_allowlist")] == [
        (ann.did, 7)]
    # a later scan of ann's audio leaves the reference out; bob's is still flagged
    await store.request_scan(pool, own_sha, force=True)
    assert await media.run_jobs(scan_worker(media)) == 1
    assert (await pool.fetchval("SELECT status FROM copyright_track_status WHERE track_uri = $1", own)) == "clear"

    fp = await call(client, mod, NS + "resolveScan",
                    {"scan": by_track[other], "resolution": "false_positive", "note": "different song"})  # fmt: skip
    assert fp["review"]["resolution"] == "false_positive" and fp["actions"] == [] and fp["allowlisted"] == []
    assert await pool.fetchval("SELECT count(*) FROM moderation_actions") == 0
    assert await pool.fetchval("SELECT count(*) FROM own_labels") == 0

    # mistakes are 400s; a violation without our labeler's key a 503
    clear_id = await pool.fetchval("SELECT max(id) FROM copyright_scans WHERE status = 'clear'")
    for body, words in (({"scan": clear_id, "resolution": "violation", "note": "x"}, "only flagged"),
                        ({"scan": 999999, "resolution": "violation", "note": "x"}, "no copyright scan"),
                        ({"scan": by_track[other], "resolution": "maybe", "note": "x"}, "resolution"),
                        ({"scan": by_track[other], "resolution": "violation", "note": " "}, "note"),
                        ({"scan": by_track[other], "resolution": "violation", "note": "x",
                          "tracks": [f"at://{bob.did}/fm.plyr.like/3k2a"]}, "not a track")):  # fmt: skip
        err = await call(client, mod, NS + "resolveScan", body, status=400, error="InvalidRequest")
        assert words in err["message"], err
    await call(client, mod, NS + "listScans", params={"status": "maybe"}, status=400)
    unsigned = await moderation_app(moderators=(mod.did,), with_signer=False)
    await call(unsigned, mod, NS + "resolveScan", {"scan": by_track[other], "resolution": "violation", "note": "x"},
               status=503, error="LabelerNotConfigured")  # fmt: skip
    # pages: newest first, a cursor to the rest
    first = await call(client, mod, NS + "listScans", params={"limit": 2})
    rest = await call(client, mod, NS + "listScans", params={"limit": 2, "cursor": first["cursor"]})
    ids = [s["id"] for s in first["scans"] + rest["scans"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 3


async def plyr(env: dict[str, str], *args: str, code: int = 0) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == code, (args, out.decode(), err.decode())
    assert b"Traceback" not in err, err.decode()
    return out.decode(), err.decode()


async def test_plyr_moderation_review(
    media: MediaServer, world: World, pool: asyncpg.Pool, database_url: str,
    clips: dict[str, Path], matcher: list[Match],  # noqa: F811
) -> None:
    ann = await world.account("ann")
    track, sha = await upload_track(media, world, ann, clips["b"].read_bytes(), "not mine")
    matcher.extend([REF, Match(902, None, None, offset_s=3661.0, reference_offset_s=0.0, length_s=15.0,
                               similarity=0.5)])  # fmt: skip
    assert await media.run_jobs(scan_worker(media)) == 1
    scan_id = await pool.fetchval("SELECT id FROM copyright_scans WHERE sha256 = $1", sha)
    key = PrivateKey.generate("k256")
    env = {**os.environ, "DATABASE_URL": database_url, "PLYR_LOG_LEVEL": "WARNING", "USER": "ops", "LOGNAME": "ops",
           "PLYR_PUBLIC_URL": "https://labeler.plyr.test", "PLYR_SERVICE_DID": "did:web:labeler.plyr.test",
           "PLYR_LABELER_KEY": key.to_bytes().hex()}  # fmt: skip
    env.pop("PLYR_LABELER_KEY_FILE", None)

    out, _ = await plyr(env, "moderation", "review")
    assert f"scan {scan_id}  flagged" in out and f"track {track}" in out and f"uploaded by {ann.did}" in out
    assert "0:40-0:52 (0:12)  matches reference 7 A Label - A Single at 0:03, similarity 0.93" in out
    assert "1:01:01-1:01:16 (0:15)  matches fingerprint 902 at 0:00, similarity 0.50" in out
    out, _ = await plyr(env, "moderation", "review", "--json")
    [view] = [orjson.loads(line) for line in out.splitlines()]
    assert view["id"] == scan_id and len(view["matches"]) == 2

    out, _ = await plyr(env, "moderation", "review", "resolve", str(scan_id), "violation", "--note", "copied")
    done = orjson.loads(out)
    assert done["review"]["reviewer"] == "cli:ops" and done["actions"][0]["subject"] == track
    assert parse_label(done["labels"][0], encoding="json").verify(key.public_key())
    _, err = await plyr(env, "moderation", "review")
    assert "no flagged scans to review" in err
    out, _ = await plyr(env, "moderation", "review", "--all")
    assert "reviewed: violation by cli:ops" in out

    # mistakes: one line, exit 1
    _, err = await plyr(env, "moderation", "review", "resolve", "999", "false_positive", "--note", "x", code=1)
    assert len(err.strip().splitlines()) == 1 and "no copyright scan 999" in err
    _, err = await plyr({**env, "PLYR_LABELER_KEY": ""}, "moderation", "review", "resolve", str(scan_id),
                        "violation", "--note", "x", code=1)  # fmt: skip
    assert "PLYR_LABELER_KEY" in err
