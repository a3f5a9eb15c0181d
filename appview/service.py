"""`plyr up` / `plyr serve`: run the AppView HTTP server until cancelled."""

from __future__ import annotations

import asyncio
import gc
import logging

from aiohttp import web

from appview.app import build_app
from appview.erasure import consuming
from appview.fairpool import FairPool
from appview.settings import AppviewSettings
from appview.xrpc_schema import LexiconSet
from core import db
from core.db import Connection
from core.runtime import Runtime

log = logging.getLogger("plyr.appview")

# The cyclic collector's thresholds while serving (CPython's default: 700, 10, 10). Requests
# hold thousands of young containers at any moment (decoded views, in-flight pages: about 200 a
# 50-track page) and the track view cache keeps promoting views to the old generation, so the
# default ran a young collection every few requests and a full one every few seconds over the
# whole cache: measured on the 100k-track mix, 10-15% of the process's CPU in the collector and
# full collections of 0.1-0.25 s (every request in flight waits: the p99). With these, young
# collections run when that much has piled up (rarely more than a few a second) and full ones
# hardly ever; what requests leave is freed by reference counting either way.
GC_THRESHOLDS = (20_000, 20, 100)


async def _keep_session(_conn: Connection) -> None:
    """Reset of a connection going back to the AppView's pool: nothing beyond asyncpg's own
    (rollback of an open transaction, listeners dropped). The default also sends
    `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release, a
    second round trip per request; the AppView never changes session state (it uses
    SET LOCAL, no LISTEN, no advisory locks, no cursors), so there is nothing to undo."""


def tune_collector() -> None:
    """The cyclic collector set for serving: everything built so far (modules, lexicons,
    routes) lives as long as the process, so it goes out of the collector's reach and a full
    collection scans only what requests leave behind (measured: 9 ms per full collection
    otherwise, a visible p99 spike); then GC_THRESHOLDS."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(rt: Runtime, settings: AppviewSettings) -> None:
    lexicons = LexiconSet.load(validator=rt.lexicons)
    # The AppView's own pool: its connections never carry another service's session state,
    # which is what makes the round-trip-free reset above safe.
    pool = await db.create_pool(rt.database_url, rt.settings, reset=_keep_session)
    # Replicas: no connection at start (min_size 0), so one that is down never stops the AppView
    # from starting; it is read from once its health check passes (replicas.py).
    replicas = [
        (db.redact(url), await db.create_pool(url, rt.settings, reset=_keep_session, min_size=0))
        for url in settings.read_urls
    ]
    try:
        # First come, first served, the gate twice as wide as the pool: see fairpool.py.
        gate = 2 * rt.settings.db_pool_max
        app = build_app(
            FairPool(pool, gate), settings,  # type: ignore[arg-type]
            resolver=rt.identity, lexicons=lexicons,
            replicas=[(name, FairPool(replica, gate)) for name, replica in replicas],
            primary_url=rt.database_url,
        )  # fmt: skip
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        tune_collector()
        try:
            site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=1024)
            await site.start()
            log.info(
                "appview listening",
                extra={"url": f"http://{settings.host}:{settings.port}", "public_url": settings.public_url,
                       "service_did": settings.service_did},
            )
            # Erasure requests of deleted accounts, queued by the indexer (appview/erasure.py).
            async with consuming(pool):
                await asyncio.Event().wait()  # until cancelled
        finally:
            await runner.cleanup()
    finally:
        for _name, replica in replicas:
            await replica.close()
        await pool.close()


async def run(rt: Runtime) -> None:
    await serve(rt, AppviewSettings.from_env(core=rt.settings))
