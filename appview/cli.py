"""`plyr serve` (the AppView alone) and `plyr seed-demo` (a realistic dataset for benchmarks)."""

from __future__ import annotations

import time

import click

from appview.labeler import cli as labeler_cli
from appview.settings import AppviewSettings
from core.cli import load_settings, run_async
from core.errors import PlyrError
from core.settings_spec import option


@click.command()
@option(AppviewSettings, "host", "--host")
@option(AppviewSettings, "port", "--port")
@option(AppviewSettings, "workers", "--workers")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the AppView (XRPC API, oEmbed, embeds) until Ctrl-C."""
    settings = load_settings()
    app_settings = AppviewSettings.from_env(overrides={"host": host, "port": port, "workers": workers}, core=settings)
    if app_settings.workers > 1:
        from appview.workers import supervise

        supervise(app_settings.workers, app_settings.host, app_settings.port, settings)
        return
    import asyncio
    import signal

    from appview.service import serve as serve_app
    from core.runtime import open_runtime

    async def _serve() -> None:
        async with open_runtime(settings) as rt:
            task = asyncio.create_task(serve_app(rt, app_settings))
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)  # stop cleanly: close server and pool
            try:
                await task
            except asyncio.CancelledError:
                pass

    try:
        run_async(_serve())
    except OSError as exc:
        raise PlyrError(f"cannot listen on {app_settings.host}:{app_settings.port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        pass


@click.command("seed-demo")
@click.option("--tracks", default=100_000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--artists", default=10_000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--likes", default=1_000_000, show_default=True, type=click.IntRange(0, 100_000_000))
@click.option("--comments", default=200_000, show_default=True, type=click.IntRange(0, 100_000_000))
@click.option("--plays", default=1_000_000, show_default=True, type=click.IntRange(0, 100_000_000))
@click.option("--force", is_flag=True, help="Seed even if the index already holds tracks.")
def seed_demo(tracks: int, artists: int, likes: int, comments: int, plays: int, force: bool) -> None:
    """Fill the index with a realistic synthetic dataset, written through the indexer's writer."""
    from appview.seed import SeedSize, seed
    from core import db
    from core.runtime import open_runtime

    settings = load_settings()
    size = SeedSize(tracks=tracks, artists=artists, likes=likes, comments=comments, plays=plays)

    async def _seed() -> None:
        async with open_runtime(settings) as rt:
            started = time.monotonic()
            # Its own connection: pool connections carry a per-command timeout meant for requests.
            conn = await db.connect(rt.database_url)
            try:
                await seed(conn, size, force=force, progress=lambda m: click.echo(f"seeding {m}", err=True))
            finally:
                await conn.close()
            click.echo(f"seeded {size} in {time.monotonic() - started:.1f}s")

    run_async(_seed())


commands: list[click.Command] = [serve, seed_demo, *labeler_cli.commands]
