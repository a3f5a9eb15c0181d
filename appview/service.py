"""`plyr up` / `plyr serve`: run the AppView HTTP server until cancelled."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from appview.app import build_app
from appview.settings import AppviewSettings
from core.runtime import Runtime

log = logging.getLogger("plyr.appview")


async def serve(rt: Runtime, settings: AppviewSettings) -> None:
    app = build_app(rt.pool, settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=1024)
        await site.start()
        log.info(
            "appview listening",
            extra={"url": f"http://{settings.host}:{settings.port}", "public_url": settings.public_url,
                   "service_did": settings.service_did},
        )
        await asyncio.Event().wait()  # until cancelled
    finally:
        await runner.cleanup()


async def run(rt: Runtime) -> None:
    await serve(rt, AppviewSettings.from_env(host=rt.settings.http_host))
