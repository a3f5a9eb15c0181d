"""`plyr media`: the media HTTP service (uploads, jobs, exports, stored media) and its job workers."""

from __future__ import annotations

import os

import click

from core.cli import load_settings, run_async


@click.command("media")
@click.option("--port", type=int, default=None, help="HTTP port (PLYR_MEDIA_PORT, default 8081).")
@click.option("--workers", type=int, default=None, help="Job workers (PLYR_MEDIA_WORKERS, default 2).")
def media(port: int | None, workers: int | None) -> None:
    """Run the media service: streamed uploads, transcoding, thumbnails, mirrors, exports.

    Needs authentication configured (PLYR_MEDIA_SERVICE_DID and/or PLYR_MEDIA_SERVER_KEY);
    refuses to start without it.
    """
    from core.runtime import open_runtime, run_until_signalled
    from media.auth import require_auth_configured
    from media.settings import MediaSettings

    if port is not None:
        os.environ["PLYR_MEDIA_PORT"] = str(port)
    if workers is not None:
        os.environ["PLYR_MEDIA_WORKERS"] = str(workers)
    settings = load_settings()
    media_settings = MediaSettings.from_env(settings)
    require_auth_configured(media_settings)  # before touching the database: fail closed, fast

    async def _run() -> None:
        async with open_runtime(settings) as rt:
            await run_until_signalled(rt, ["media"])

    run_async(_run())


commands = [media]
