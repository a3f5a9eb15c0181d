"""`plyr moderation scan` and `plyr moderation catalog add` as an operator runs them (a process
on the test database and the media folder of the test's media service)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from integration.media.conftest import MediaServer
from integration.media.test_copyright_scans import clips, make_clip  # noqa: F401 - fixture
from media.storage import LocalStorage

ROOT = Path(__file__).resolve().parents[3]


async def plyr(env: dict[str, str], *args: str, code: int = 0) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", "moderation", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == code, (args, out.decode(), err.decode())
    assert b"Traceback" not in err, err.decode()
    return out.decode(), err.decode()


async def test_plyr_moderation_scan_and_catalog(
    media_server: MediaServer, pool: asyncpg.Pool, database_url: str, clips: dict[str, Path], tmp_path: Path  # noqa: F811
) -> None:
    # uploads made with scanning off (as before this feature): the backlog
    shas = []
    for name in ("a", "b"):
        status, body = await media_server.upload("audio", clips[name].read_bytes())
        assert status == 201
        shas.append(body["sha256"])
    bad = make_clip(tmp_path / "c.mp3", 12, 3)
    _, body = await media_server.upload("audio", bad.read_bytes())
    shas.append(body["sha256"])
    storage = media_server.ctx.storage
    assert isinstance(storage, LocalStorage)
    key = await pool.fetchval("SELECT storage_key FROM media_objects WHERE sha256 = $1", shas[2])
    storage.path(key).write_bytes(b"not audio at all" * 1000)
    env: dict[str, Any] = {**os.environ, "DATABASE_URL": database_url, "PLYR_LOG_LEVEL": "WARNING",
                           "PLYR_DATA_DIR": str(media_server.settings.data_dir)}  # fmt: skip

    out, _ = await plyr(env, "scan", "--unscanned", "--dry-run", "--max-duration", "20")
    assert "would scan 2 audio objects (0:27 of audio); 1 longer than 20 s left out" in out
    assert sum(f"would scan {sha}" in out for sha in shas) == 2
    assert await pool.fetchval("SELECT count(*) FROM copyright_scans") == 0

    out, err = await plyr(env, "scan", "--unscanned")
    assert "scanned 3 audio objects (0:52 of audio): 2 clear, 0 flagged, 1 errors (queued for the media workers" in out
    assert "scanning" in err  # the progress bar
    rows = {r["sha256"]: r for r in await pool.fetch("SELECT * FROM copyright_scans")}
    assert [rows[sha]["status"] for sha in shas] == ["clear", "clear", "error"]
    assert rows[shas[2]]["job_id"] is None and rows[shas[2]]["next_attempt_at"] is not None
    retry = await pool.fetchrow("SELECT * FROM media_jobs WHERE kind = 'copyright_scan'")
    assert retry["dedupe_key"] == shas[2] and retry["payload"]["previous_attempts"] == 1
    assert retry["run_after"] > await pool.fetchval("SELECT now()")
    # the media workers retry it: attempt 2
    await pool.execute("UPDATE media_jobs SET run_after = now()")
    from media.copyright.scan import run_copyright_scan

    assert await media_server.run_jobs(media_server.worker(handlers={"copyright_scan": run_copyright_scan})) == 1
    assert await pool.fetchval("SELECT max(attempt) FROM copyright_scans WHERE sha256 = $1", shas[2]) == 2

    out, _ = await plyr(env, "scan", "--unscanned")
    assert out.startswith("scanned 0 audio objects")
    out, _ = await plyr(env, "scan", "--errors", "--dry-run")  # its retry is pending: not again
    assert "would scan 0 audio objects" in out
    out, _ = await plyr(env, "scan", "--all", "--max-duration", "20")
    assert "scanned 1 audio objects (0:15 of audio): 1 clear, 0 flagged, 0 errors; 1 longer than 20 s left out" in out  # c: retry pending
    _, err = await plyr(env, "scan", code=1)
    assert "--unscanned, --errors or --all" in err

    out, err = await plyr(env, "catalog", "add", str(clips["a"]), "--artist", "The Band", "--title", "Song",
                          "--isrc", "us-rc1-76-07839")  # fmt: skip
    entry = orjson.loads(out)
    assert entry["referenceId"] >= 1 and (entry["title"], entry["isrc"]) == ("Song", "USRC17607839")
    # a's upload was scanned clear before: the new reference is found in it, and it is scanned again
    assert f"reference {entry['referenceId']} is in audio {shas[0]} at 0:00: scanned again" in err and "flagged" in err
    newest = await pool.fetchrow("SELECT * FROM copyright_scans WHERE sha256 = $1 ORDER BY id DESC LIMIT 1", shas[0])
    assert newest["status"] == "flagged" and newest["matches"][0]["reference_id"] == entry["referenceId"]
    out, _ = await plyr(env, "catalog", "add", str(clips["a"]), str(clips["b"]), "--artist", "The Band")
    assert [orjson.loads(line)["title"] for line in out.splitlines()] == ["a", "b"]
    _, err = await plyr(env, "catalog", "add", str(clips["a"]), "--artist", "X", "--isrc", "nope", code=1)
    assert "not an ISRC" in err
    _, err = await plyr(env, "catalog", "add", str(clips["a"]), str(bad), "--artist", "X", "--title", "T", code=1)
    assert "one recording" in err
    (tmp_path / "junk.mp3").write_bytes(b"junk" * 100)
    out, err = await plyr(env, "catalog", "add", str(clips["a"]), str(tmp_path / "junk.mp3"), "--artist", "X", code=1)
    assert len(out.splitlines()) == 1 and "1 of 2 files could not be added" in err
