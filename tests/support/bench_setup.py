"""What every benchmark script sets up for itself, so that it runs the same on any machine.

- `isolate()`: a scratch working directory (core.settings reads `.env` from the working
  directory, so none is read) and an environment holding only the benchmark's own PLYR_*
  settings; loopback is allowed, since every server of a benchmark listens there.
- `server_url()`: the Postgres server named by PLYR_TEST_DATABASE_URL or DATABASE_URL, else the
  embedded one of the tests (`.pytest-pg/`).
- `ScratchDatabase`: a fresh, migrated database on that server, dropped afterwards.
- `seed_demo()`: the one call into `plyr seed-demo`'s dataset generator.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parents[2]

# Settings a caller may pass on to a benchmark: where captures are cached, and the server URL
# (read by server_url() before isolate() drops it).
_KEPT = frozenset({"PLYR_BENCH_DIR"})
_SERVER_VARS = ("PLYR_TEST_DATABASE_URL", "DATABASE_URL")


def server_url() -> str:
    """The Postgres server to create scratch databases on (call before isolate())."""
    for name in _SERVER_VARS:
        if os.environ.get(name):
            return os.environ[name]
    from core import db
    from core.settings import CoreSettings

    settings = dataclasses.replace(
        CoreSettings.from_env(), database_url=None, data_dir=ROOT / ".pytest-pg"
    )
    return db.start_embedded(settings)


def isolate(**settings: str) -> Path:
    """Drop inherited plyr settings, apply the benchmark's own and move to a scratch directory
    (removed at exit); returns that directory."""
    for name in list(os.environ):
        if (name.startswith("PLYR_") or name == "DATABASE_URL") and name not in _KEPT:
            del os.environ[name]
    os.environ.update(
        {"PLYR_ALLOW_PRIVATE_NETWORK": "true", "PLYR_LOG_LEVEL": "WARNING", **settings}
    )
    scratch = Path(tempfile.mkdtemp(prefix="plyr-bench-"))
    atexit.register(shutil.rmtree, scratch, True)
    os.chdir(scratch)
    return scratch


def child_env(**settings: str) -> dict[str, str]:
    """The environment of a plyr process started by a benchmark: this (isolated) one, the
    project importable, plus `settings`."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **settings}


def database_url(server: str, name: str) -> str:
    return urlunsplit(urlsplit(server)._replace(path="/" + name))


class ScratchDatabase:
    """A migrated database of the benchmark's own on `server`, dropped on exit.

    Usable as `with` (from synchronous code) or `async with`; `.url` is its URL."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"plyr_bench_{uuid.uuid4().hex[:10]}"
        self.url = database_url(server, self.name)

    async def create(self) -> str:
        from core import db
        from core.migrate import apply_migrations

        admin = await asyncpg.connect(self.server)
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await admin.close()
        conn = await db.connect(self.url)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
        return self.url

    async def drop(self) -> None:
        admin = await asyncpg.connect(self.server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()

    def __enter__(self) -> str:
        return asyncio.run(self.create())

    def __exit__(self, *exc: object) -> None:
        asyncio.run(self.drop())

    async def __aenter__(self) -> str:
        return await self.create()

    async def __aexit__(self, *exc: object) -> None:
        await self.drop()


async def seed_demo(url: str, *, tracks: int, artists: int, likes: int, comments: int,
                    plays: int) -> float:
    """Fill an empty index with the `plyr seed-demo` dataset of this size, then vacuum it
    (statistics and a visibility map, as autovacuum leaves a live index); returns seconds."""
    from appview.seed import SeedSize, seed
    from core import db

    size = SeedSize(tracks=tracks, artists=artists, likes=likes, comments=comments, plays=plays)
    started = time.monotonic()
    conn = await db.connect(url)  # the writer hands records to jsonb columns: core's codecs
    try:
        await seed(conn, size)
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()
    elapsed = time.monotonic() - started
    print(f"seeded {size} in {elapsed:.1f}s", file=sys.stderr)
    return elapsed
