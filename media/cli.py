"""`plyr media`: the media HTTP service (uploads, jobs, exports, stored media) and its job workers;
`plyr media sweep`: delete stored objects that no row refers to."""

from __future__ import annotations

import functools

import click

from core.cli import load_settings, run_async
from core.errors import PlyrError
from core.settings_spec import option
from media.settings import MIN_ORPHAN_GRACE_S, MediaSettings


@click.group("media", invoke_without_command=True)
@option(MediaSettings, "port", "--port")
@option(MediaSettings, "workers", "--workers")
@click.pass_context
def media(ctx: click.Context, port: int | None, workers: int | None) -> None:
    """Run the media service: streamed uploads, transcoding, thumbnails, mirrors, exports.

    Needs authentication configured (PLYR_MEDIA_SERVICE_DID and/or PLYR_MEDIA_SERVER_KEY);
    refuses to start without it.
    """
    if ctx.invoked_subcommand is not None:
        return
    from core.runtime import open_runtime, run_until_signalled
    from media.auth import require_auth_configured
    from media.service import run as run_media

    settings = load_settings()
    media_settings = MediaSettings.from_env(overrides={"port": port, "workers": workers}, core=settings)
    require_auth_configured(media_settings)  # before touching the database: fail closed, fast

    async def _run() -> None:
        async with open_runtime(settings) as rt:
            await run_until_signalled(rt, {"media": functools.partial(run_media, settings=media_settings)})

    run_async(_run())


def _age(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


@media.command("sweep")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@option(MediaSettings, "orphan_grace_s", "--grace", dest="grace")
def sweep_command(dry_run: bool, grace: float | None) -> None:
    """Delete stored objects that no database row refers to.

    Such orphans are left by a process that died between storing an object and recording it.
    Objects younger than the grace period are left alone (an upload may be between its two
    steps), and so is anything outside the media prefixes (audio/, images/, exports/). The
    media service also runs this every PLYR_MEDIA_SWEEP_INTERVAL_S (6 h by default).
    """
    from core.runtime import open_runtime
    from media.storage import StorageError, storage_from_settings
    from media.sweep import SweepReport, sweep_exclusively

    if grace is not None and not grace >= MIN_ORPHAN_GRACE_S:
        raise PlyrError(f"--grace {grace:g} is too short: at least {MIN_ORPHAN_GRACE_S:g} seconds")
    settings = load_settings()
    media_settings = MediaSettings.from_env(overrides={"orphan_grace_s": grace}, core=settings)
    grace_s = media_settings.orphan_grace_s

    def show(key: str, size: int, age_s: float) -> None:
        click.echo(f"would delete {key} ({size} bytes, {_age(age_s)} old)")

    async def _sweep() -> SweepReport | None:
        async with open_runtime(settings) as rt:
            storage = storage_from_settings(media_settings)
            try:
                return await sweep_exclusively(
                    rt.pool, storage, grace_s=grace_s, dry_run=dry_run, on_orphan=show if dry_run else None
                )
            except StorageError as exc:
                raise PlyrError(str(exc)) from None
            finally:
                await storage.close()

    report = run_async(_sweep())
    if report is None:
        raise PlyrError("another process is sweeping this storage now; try again later")
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"scanned {report.scanned} objects ({report.young} within the {_age(grace_s)} grace, "
        f"{report.referenced} referenced); {verb} {report.orphans} orphans ({report.orphan_bytes} bytes) "
        f"and {report.unfinished_writes} interrupted writes"
        + (f"; {report.failed} deletes failed (see the log)" if report.failed else "")
    )
    if report.failed:
        raise PlyrError(f"{report.failed} deletes failed")


commands = [media]
