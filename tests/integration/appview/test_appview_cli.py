"""`plyr serve` as a real process on the test database: it migrates, listens, and answers."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_plyr_serve_runs_and_stops_cleanly(database_url: str) -> None:
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PLYR_LOG_LEVEL": "WARNING",
           "PLYR_CORS_ORIGINS": "https://plyr.test"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", "serve", "--port", str(port), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("plyr serve did not come up")
            async with http.get(f"http://127.0.0.1:{port}/xrpc/fm.plyr.feed.getLatestTracks",
                                headers={"Origin": "https://plyr.test"}) as resp:
                assert resp.status == 200 and (await resp.json()) == {"tracks": []}
                assert resp.headers["Access-Control-Allow-Origin"] == "https://plyr.test"
                assert resp.headers["Plyr-Index-Lag"] == "unknown"
    finally:
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, stderr.decode()  # SIGTERM is a clean stop
    assert b"Traceback" not in stderr, stderr.decode()


async def test_plyr_serve_reports_a_busy_port_in_one_line(database_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "DATABASE_URL": database_url, "PLYR_LOG_LEVEL": "WARNING"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "plyr", "serve", "--port", str(port), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    text = stderr.decode()
    assert "cannot listen on 127.0.0.1" in text and "Traceback" not in text, text
