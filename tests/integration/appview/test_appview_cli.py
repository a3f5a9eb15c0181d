"""`plyr serve` as a real process on the test database: it migrates, listens, and answers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import psutil

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


class _Log:
    """The supervisor's log lines as they arrive: tests wait on them, not on time."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream
        self.lines: list[str] = []

    async def wait_for(self, text: str, count: int = 1) -> list[str]:
        async def read() -> list[str]:
            while sum(text in line for line in self.lines) < count:
                line = await self.stream.readline()
                assert line, "the process exited:\n" + "".join(self.lines)
                self.lines.append(line.decode(errors="replace"))
            return [line for line in self.lines if text in line]

        return await asyncio.wait_for(read(), 120)


def _pid(line: str) -> int:
    match = re.search(r"pid=(\d+)", line)
    assert match, line
    return int(match.group(1))


def _listening(pid: int, port: int) -> bool:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


async def _wait_listening(pid: int, port: int) -> None:
    for _ in range(1200):  # polls the socket table: a bound for a stuck worker only
        if _listening(pid, port):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"worker {pid} never listened on {port}")


async def test_plyr_serve_workers_share_the_port_and_a_dead_worker_is_restarted(database_url: str) -> None:
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PLYR_LOG_LEVEL": "INFO"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", "serve", "--workers", "2", "--port", str(port), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    log = _Log(proc.stderr)
    try:
        first, second = (_pid(line) for line in await log.wait_for("worker started", 2))
        # Both workers hold a listening socket on the one port (SO_REUSEPORT).
        await asyncio.gather(_wait_listening(first, port), _wait_listening(second, port))
        async with aiohttp.ClientSession() as http:
            for _ in range(20):
                async with http.get(f"http://127.0.0.1:{port}/xrpc/fm.plyr.feed.getLatestTracks") as resp:
                    assert resp.status == 200
            os.kill(first, signal.SIGKILL)
            await log.wait_for("worker exited")
            replacement = _pid((await log.wait_for("worker started", 3))[-1])
            assert replacement not in (first, second)
            await _wait_listening(replacement, port)
            async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                assert resp.status == 200
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
    assert not psutil.pid_exists(second) and not psutil.pid_exists(replacement)  # stopped with the parent
    assert "Traceback" not in "".join(log.lines)
