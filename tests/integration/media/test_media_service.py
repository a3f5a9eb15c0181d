"""`plyr media` as a real process: fails closed without auth; serves uploads and runs jobs with it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[3]
PLYR = [sys.executable, "-m", "plyr"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLYR_MEDIA", "PLYR_STORAGE"))}
    env.update(extra)
    return env


def test_refuses_to_start_without_auth(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*PLYR, "media"], cwd=tmp_path, env=_env(PYTHONPATH=str(ROOT), PLYR_DATA_DIR=str(tmp_path)),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "refusing to start" in proc.stderr and "Traceback" not in proc.stderr


async def test_serves_uploads_and_runs_jobs(database_url: str, tmp_path: Path, samples: dict[str, Path]) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = _env(
        PYTHONPATH=str(ROOT), DATABASE_URL=database_url, PLYR_DATA_DIR=str(tmp_path / "data"),
        PLYR_MEDIA_SERVER_KEY="k" * 32, PLYR_MEDIA_PORT=str(port), PLYR_MEDIA_WORKERS="2",
        PLYR_PLC_URL="http://127.0.0.1:9",
    )
    proc = await asyncio.create_subprocess_exec(
        *PLYR, "media", cwd=str(tmp_path), env=env, stderr=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{base}/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("plyr media did not come up")
            headers = {"Authorization": "Bearer " + "k" * 32, "X-Plyr-Did": "did:plc:abc"}
            async with session.post(f"{base}/upload/audio", data=samples["tone.aiff"].read_bytes(), headers=headers) as resp:
                assert resp.status == 201
                body = await resp.json()
            final = None
            async with session.get(f"{base}/jobs/{body['jobId']}/events", headers=headers) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        final = orjson.loads(line[6:])
            assert final is not None and final["status"] == "done", final
            async with session.get(body["streamUrl"]) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "audio/mpeg"
            async with session.get(f"{base}/metrics") as resp:
                assert "plyr_media_uploads_total" in await resp.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err
    assert not any((tmp_path / "data" / "tmp").iterdir())


async def test_under_plyr_up_without_auth_it_runs_but_refuses_uploads(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    samples: dict[str, Path],
) -> None:
    from core.runtime import Runtime
    from core.settings import CoreSettings
    from media import service
    from tests.support.identity import FakeResolver

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    for name in ("PLYR_MEDIA_SERVER_KEY", "PLYR_MEDIA_SERVICE_DID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLYR_MEDIA_PORT", str(port))
    monkeypatch.setenv("PLYR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PLYR_MEDIA_WORKERS", "1")
    rt = Runtime(settings=CoreSettings.from_env(), database_url=database_url, pool=pool, identity=FakeResolver())
    task = asyncio.create_task(service.run(rt))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            async with session.post(
                f"http://127.0.0.1:{port}/upload/audio", data=samples["tone.mp3"].read_bytes(),
                headers={"Authorization": "Bearer anything"},
            ) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"] == "AuthNotConfigured"
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
