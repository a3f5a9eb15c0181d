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
from typing import TYPE_CHECKING, Any

import asyncpg

from core import db
from core.migrate import apply_migrations
from core.settings import CoreSettings
from protocol.identity.interface import IdentityResolving

if TYPE_CHECKING:
    import aiohttp

    from protocol.crypto import PublicKey
    from protocol.identity.documents import DidDocument
    from protocol.lexicon import Lexicons

log = logging.getLogger("plyr.runtime")

USER_AGENT = "plyr-appview"

Service = Callable[["Runtime"], Coroutine[Any, Any, None]]


class LazySession:
    """An outbound aiohttp session guarded against non-public addresses (core/net.py), opened
    on first use: importing and opening aiohttp is a large part of a command's start-up, and a
    capture replay without signature checks never fetches anything."""

    def __init__(self, settings: CoreSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            from core.net import outbound_connector

            self._session = aiohttp.ClientSession(
                connector=outbound_connector(
                    allow_private_network=self._settings.allow_private_network, limit=100, ttl_dns_cache=300
                ),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class LazyIdentity:
    """The process's identity resolver (on the runtime's session), built on first use. The
    settings are checked at once (a bad PLC URL fails before the database starts)."""

    def __init__(self, settings: CoreSettings, outbound: LazySession) -> None:
        from core.identity import check_identity_settings

        check_identity_settings(settings)
        self._settings = settings
        self._outbound = outbound
        self._resolver: IdentityResolving | None = None

    @property
    def resolver(self) -> IdentityResolving:
        if self._resolver is None:
            from core.identity import resolver_from_env

            self._resolver = resolver_from_env(session=self._outbound.session, settings=self._settings)
        return self._resolver

    async def resolve_did(self, did: str, *, fresh: bool = False) -> DidDocument:
        return await self.resolver.resolve_did(did, fresh=fresh)

    async def signing_key(self, did: str, *, fresh: bool = False) -> PublicKey:
        return await self.resolver.signing_key(did, fresh=fresh)

    async def resolve_handle(self, handle: str, *, fresh: bool = False) -> str | None:
        return await self.resolver.resolve_handle(handle, fresh=fresh)

    async def verified_handle(self, did: str) -> str | None:
        return await self.resolver.verified_handle(did)

    def invalidate(self, did: str) -> None:
        if self._resolver is not None:
            self._resolver.invalidate(did)

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()


@dataclass
class Runtime:
    """`identity`: the one resolver (and cache) of the process. `http`: an outbound session
    guarded against non-public addresses, for fetches that network data points at, opened on
    first use (a runtime a test builds without `outbound` makes its own, closed by `close`)."""

    settings: CoreSettings
    database_url: str
    pool: asyncpg.Pool
    identity: IdentityResolving
    outbound: LazySession | None = field(default=None, repr=False)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def http(self) -> aiohttp.ClientSession:
        if self.outbound is None:
            self.outbound = LazySession(self.settings)
        return self.outbound.session

    @property
    def lexicons(self) -> Lexicons:
        # Loaded on first use: commands that never validate records do not pay for it.
        from core.lexicons import project_lexicons

        return project_lexicons()


@contextlib.asynccontextmanager
async def open_runtime(settings: CoreSettings, *, migrate: bool = True) -> AsyncIterator[Runtime]:
    """Identity resolver and HTTP session (opened on first use), database URL (embedded if
    none), migrations, pool; all closed on exit."""
    outbound = LazySession(settings)
    identity = LazyIdentity(settings, outbound)  # a bad PLC URL fails before the database starts
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
            yield Runtime(settings=settings, database_url=url, pool=pool, identity=identity, outbound=outbound)
        finally:
            await pool.close()
    finally:
        await identity.close()
        await outbound.close()


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
