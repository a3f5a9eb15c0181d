"""What a running plyr process shares: settings, the database pool, the identity resolver, the
lexicons, the outbound HTTP session, and a way to stop.

One `Runtime` per process, so one resolver cache and one set of lexicons however many services
run in it. Each service exposes `async def run(rt: Runtime) -> None`, which runs until
cancelled; the list of services lives at the top (plyr/services.py), since core sits below
them. `plyr up` runs all of them in one process; `plyr index`/`serve`/`media` run one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from core import db
from core.identity import resolver_from_env
from core.lexicons import project_lexicons
from core.migrate import apply_migrations
from core.net import outbound_connector
from core.settings import CoreSettings
from protocol.identity import IdentityResolving
from protocol.lexicon import Lexicons

log = logging.getLogger("plyr.runtime")

USER_AGENT = "plyr-appview"

Service = Callable[["Runtime"], Coroutine[Any, Any, None]]


@dataclass
class Runtime:
    """`identity`: the one resolver (and cache) of the process. `http`: an outbound session
    guarded against non-public addresses, for fetches that network data points at (None when
    a test builds a runtime without one)."""

    settings: CoreSettings
    database_url: str
    pool: asyncpg.Pool
    identity: IdentityResolving
    http: aiohttp.ClientSession | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def lexicons(self) -> Lexicons:
        # Loaded on first use: commands that never validate records do not pay for it.
        return project_lexicons()


@contextlib.asynccontextmanager
async def open_runtime(settings: CoreSettings, *, migrate: bool = True) -> AsyncIterator[Runtime]:
    """HTTP session and identity resolver, database URL (embedded if none), migrations, pool;
    all closed on exit."""
    async with aiohttp.ClientSession(
        connector=outbound_connector(
            allow_private_network=settings.allow_private_network, limit=100, ttl_dns_cache=300
        ),
        headers={"User-Agent": USER_AGENT},
    ) as http:
        identity = resolver_from_env(session=http, settings=settings)  # a bad PLC URL fails before the database starts
        try:
            url = db.resolve_database_url(settings)
            if migrate:
                conn = await db.connect(url)
                try:
                    await apply_migrations(conn)
                finally:
                    await conn.close()
            pool = await db.create_pool(url, settings)
            try:
                yield Runtime(settings=settings, database_url=url, pool=pool, identity=identity, http=http)
            finally:
                await pool.close()
        finally:
            await identity.close()


async def run_until_signalled(rt: Runtime, services: Mapping[str, Service]) -> None:
    """Run `services` (name -> entry point) together until SIGINT/SIGTERM, or until one fails."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, rt.stopping.set)
    tasks = {asyncio.create_task(entry(rt), name=name): name for name, entry in services.items()}
    log.info("up", extra={"services": ",".join(tasks.values()) or "none", "database": db.redact(rt.database_url)})
    stop_waiter = asyncio.create_task(rt.stopping.wait())
    try:
        done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        log.info("stopping")
        for task in [stop_waiter, *tasks]:
            task.cancel()
        await asyncio.gather(stop_waiter, *tasks, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
