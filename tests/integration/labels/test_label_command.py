"""`plyr labels` as a process (the runtime's guarded session, settings, signals), and the service
with no labelers configured (idles, after lifting takedowns no labeler holds any more)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncpg

from core.runtime import Runtime
from core.settings import CoreSettings, LabelSettings
from indexer.labels.service import run_labels
from tests.integration.labels.conftest import until
from tests.integration.labels.fake_labeler import FakeLabeler
from tests.support.identity import local_resolver

ROOT = Path(__file__).resolve().parents[3]
TRACK = "at://did:plc:artist234567abcdefghijklm/fm.plyr.track/3laaaaaaaaaa2"


async def test_plyr_labels_runs_in_the_foreground(
    pool: asyncpg.Pool, database_url: str, labeler: FakeLabeler, tmp_path: Path
) -> None:
    labeler.emit(labeler.label(TRACK, "spam"), labeler.label(TRACK, "porn"))
    env = {
        **os.environ, "DATABASE_URL": database_url, "PLYR_PLC_URL": labeler.plc.url,
        "PLYR_ALLOW_PRIVATE_NETWORK": "true", "PLYR_LABELERS": "", "PLYR_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }  # fmt: skip
    log = tmp_path / "labels.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "plyr", "labels", "--labeler", labeler.did,
            cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    try:
        async def stored() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"plyr labels exited {proc.returncode}: {log.read_text()[-2000:]}")
            return await pool.fetchval("SELECT cursor FROM label_cursors WHERE src = $1", labeler.did) == 1

        await until(stored, "plyr labels to store the labeler's first frame", within=60)
        assert await pool.fetchval("SELECT count(*) FROM labels") == 2
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0, log.read_text()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "subscribed to labeler" in log.read_text()


async def test_no_labelers_idles_after_a_sweep(pool: asyncpg.Pool, database_url: str) -> None:
    await pool.execute(
        "INSERT INTO actors (did, visible, moderation_takedown) VALUES ('did:plc:gone234567abcdefghijklmn', false, true)"
    )
    resolver = local_resolver("http://127.0.0.1:1")
    rt = Runtime(settings=CoreSettings.from_env(), database_url=database_url, pool=pool, identity=resolver)
    task = asyncio.create_task(run_labels(rt, LabelSettings()))
    try:
        async def lifted() -> bool:
            return bool(await pool.fetchval("SELECT visible FROM actors"))

        await until(lifted, "the takedown without a label to be lifted")
        assert not task.done()  # `plyr up` would stop every service if this one returned
        rt.stopping.set()
        async with asyncio.timeout(5):
            await task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await resolver.close()
