"""`plyr up` tells its indexer which host serves this AppView's track pages (the host of
PLYR_PUBLIC_URL) when PLYR_TRACK_PAGE_HOSTS is unset, so network plays naming our `/track/<n>`
pages match by URL with no configuration."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from core import db

ROOT = Path(__file__).resolve().parents[3]


async def test_up_matches_plays_naming_its_own_pages(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PLYR_TRACK_PAGE_HOSTS"}
    env.update(
        DATABASE_URL=database_url, PLYR_DATA_DIR=str(tmp_path / "data"), PLYR_LOG_FORMAT="json",
        PLYR_PUBLIC_URL="https://Music.Example:8443", PYTHONPATH=str(ROOT),
        # The indexer would dial the public relay; a closed loopback port instead.
        PLYR_RELAY_URL="ws://127.0.0.1:9/xrpc/com.atproto.sync.subscribeRepos",
    )  # fmt: skip
    log = (tmp_path / "up.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", "up", "--only", "indexer",
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        conn = await db.connect(database_url)
        try:
            hosts: list[str] = []
            for _ in range(1200):  # progress: the row the indexer writes at start (bounded)
                hosts = [r["host"] for r in await conn.fetch("SELECT host FROM track_page_hosts")]
                if hosts or proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
            assert hosts == ["music.example:8443"], (tmp_path / "up.log").read_text()[-2000:]
        finally:
            await conn.close()
    finally:
        proc.terminate()
        await proc.wait()
