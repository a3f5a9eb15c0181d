"""The media service: the HTTP app and N job workers, sharing one database pool and storage.

`plyr media` runs it strictly: with no authentication configured it refuses to start.
Under `plyr up` (everything in one process) a missing auth configuration is logged as an
error and the service still runs the workers and serves stored media, but every upload and
export request is refused (401 AuthNotConfigured): closed, never open, without taking the
indexer and appview down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.errors import ConfigError
from core.runtime import Runtime
from media.auth import Authenticator, require_auth_configured
from media.erasure import erase_forever
from media.events import JobEvents
from media.ffmpeg import ffmpeg_exe, run_ffmpeg
from media.http import create_app, serving
from media.ingest import MediaContext
from media.mirror_requests import drain_forever
from media.settings import MediaSettings
from media.storage import storage_from_settings
from media.worker import Worker, worker_name

log = logging.getLogger("plyr.media")


async def check_ffmpeg(exe: str) -> None:
    try:
        await run_ffmpeg(exe, ["-version"], timeout_s=20)
    except Exception as exc:
        raise ConfigError(f"ffmpeg does not run ({exe}): {exc}") from exc


async def _expire_exports_forever(ctx: MediaContext, every_s: float = 3600.0) -> None:
    from media.exports import expire_exports

    while True:
        try:
            removed = await expire_exports(ctx.pool, ctx.storage, ttl_s=ctx.settings.export_ttl_s)
            if removed:
                log.info("expired exports removed", extra={"count": removed})
        except Exception:
            log.exception("expiring exports failed")
        await asyncio.sleep(every_s)


FIRST_SWEEP_DELAY_S = 300.0  # after start: a process restarted often still sweeps


async def _sweep_orphans_forever(ctx: MediaContext) -> None:
    from media.sweep import sweep_exclusively, sweep_temp_files

    interval = ctx.settings.sweep_interval_s
    if interval <= 0:
        return
    await asyncio.sleep(min(interval, FIRST_SWEEP_DELAY_S))
    while True:
        try:
            # This process's own temporary folder first (not shared: no lock needed).
            await asyncio.to_thread(
                sweep_temp_files, ctx.settings.tmp_dir, grace_s=ctx.settings.orphan_grace_s
            )
            report = await sweep_exclusively(ctx.pool, ctx.storage, grace_s=ctx.settings.orphan_grace_s)
            if report is None:
                log.info("orphan sweep skipped: another media process is sweeping")
        except Exception:
            log.exception("orphan sweep failed")
        await asyncio.sleep(interval)


async def run(rt: Runtime, *, strict: bool = False, settings: MediaSettings | None = None) -> None:
    """Serve HTTP and run the workers until cancelled."""
    settings = settings or MediaSettings.from_env(core=rt.settings)
    if strict:
        require_auth_configured(settings)
    elif not settings.auth_configured:
        log.error(
            "media: no authentication configured (PLYR_MEDIA_SERVICE_DID / PLYR_MEDIA_SERVER_KEY); "
            "uploads and exports are refused until one is set"
        )
    exe = ffmpeg_exe(settings.ffmpeg)
    await check_ffmpeg(exe)
    storage = storage_from_settings(settings)
    ctx = MediaContext(settings=settings, pool=rt.pool, storage=storage, ffmpeg=exe)
    resolver = rt.identity
    events = JobEvents(rt.database_url)
    await events.start()
    auth = Authenticator(settings, resolver, required=strict)
    app = create_app(ctx, auth, events)
    workers = [
        Worker(ctx, name=worker_name(i), resolver=resolver, wake=events.new_job)
        for i in range(settings.workers)
    ]
    housekeeping = [
        asyncio.create_task(_expire_exports_forever(ctx), name="media-housekeeping"),
        asyncio.create_task(_sweep_orphans_forever(ctx), name="media-orphan-sweep"),
    ]
    # Media's part of account data erasures (media/erasure.py): every process, jobs or not.
    housekeeping.append(asyncio.create_task(
        erase_forever(ctx.pool, ctx.storage, events.erasure_requests), name="media-erasure"))
    if workers:  # requests wait in the outbox while no process here runs jobs
        housekeeping.append(asyncio.create_task(
            drain_forever(ctx.pool, events.mirror_requests), name="media-mirror-requests"))
    try:
        async with serving(app, settings.host, settings.port):
            log.info(
                "media service up",
                extra={"url": settings.public_url, "workers": len(workers), "storage": storage.name},
            )
            if workers:
                await asyncio.gather(*(w.run() for w in workers))
            else:
                await asyncio.Event().wait()
    finally:
        for task in housekeeping:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*housekeeping, return_exceptions=True)
        await events.stop()
        with contextlib.suppress(Exception):
            await storage.close()
