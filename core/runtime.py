"""What a running plyr process shares: settings, the database URL and pool, and a way to stop.

Each service (indexer, appview, media) exposes `async def run(rt: Runtime) -> None`, which runs
until cancelled. `plyr up` runs all of them in one process; `plyr index`/`serve`/`media` run one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from core import db
from core.migrate import apply_migrations
from core.settings import CoreSettings

log = logging.getLogger("plyr.runtime")

# name -> "module:function" of each service's entry point, in start order.
SERVICES: dict[str, str] = {
    "indexer": "indexer.service:run",
    "resync": "indexer.backfill.service:run",
    "appview": "appview.service:run",
    "media": "media.service:run",
}


@dataclass
class Runtime:
    settings: CoreSettings
    database_url: str
    pool: asyncpg.Pool
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def open_runtime(settings: CoreSettings, *, migrate: bool = True) -> AsyncIterator[Runtime]:
    """Database URL (embedded if none), migrations, pool; all closed on exit."""
    url = db.resolve_database_url(settings)
    if migrate:
        conn = await db.connect(url)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
    pool = await db.create_pool(url, settings)
    try:
        yield Runtime(settings=settings, database_url=url, pool=pool)
    finally:
        await pool.close()


def load_service(name: str) -> Callable[[Runtime], Coroutine[Any, Any, None]] | None:
    module_name, func_name = SERVICES[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None  # that service is not built yet
        raise
    return getattr(module, func_name)


async def run_until_signalled(rt: Runtime, services: list[str]) -> None:
    """Run the named services together until SIGINT/SIGTERM, or until one of them fails."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, rt.stopping.set)
    tasks: dict[asyncio.Task[None], str] = {}
    for name in services:
        entry = load_service(name)
        if entry is None:
            log.info("service not available in this build", extra={"service": name})
            continue
        tasks[asyncio.create_task(entry(rt), name=name)] = name
    log.info("up", extra={"services": ",".join(tasks.values()) or "none", "database": db.redact(rt.database_url)})
    stop_waiter = asyncio.create_task(rt.stopping.wait())
    try:
        done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_waiter and (error := task.exception()) is not None:
                raise error
    finally:
        log.info("stopping")
        for task in [stop_waiter, *tasks]:
            task.cancel()
        await asyncio.gather(stop_waiter, *tasks, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
