"""`plyr labels`: the label subscriber in the foreground (what `plyr up` runs as "labels")."""

from __future__ import annotations

import logging

import click

from core.cli import load_settings, run_async
from core.errors import PlyrError

log = logging.getLogger("plyr.labels")


@click.command("labels")
@click.option(
    "--labeler", "labelers", multiple=True, metavar="DID",
    help="Subscribe to this labeler (repeatable) instead of $PLYR_LABELERS.",
)  # fmt: skip
@click.option(
    "--moderation-labeler", "moderation", multiple=True, metavar="DID",
    help="Trust this labeler's account takedowns (repeatable) instead of $PLYR_MODERATION_LABELERS.",
)  # fmt: skip
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0,
              help="Serve /metrics on this port (0: not served).")  # fmt: skip
def labels_command(labelers: tuple[str, ...], moderation: tuple[str, ...], metrics_port: int) -> None:
    """Subscribe to labelers (com.atproto.label.subscribeLabels) and store their labels."""
    from core.runtime import open_runtime
    from core.settings import LabelSettings
    from indexer.cli import _until_signalled
    from indexer.labels.service import run_labels

    core_settings = load_settings()
    settings = LabelSettings.from_env(
        overrides={"labelers": ",".join(labelers) or None, "moderation_labelers": ",".join(moderation) or None}
    )
    if not settings.labelers:
        raise PlyrError("no labelers to subscribe to: set PLYR_LABELERS or pass --labeler DID")

    async def _main() -> None:
        runner = None
        if metrics_port:
            from core.metrics import start_metrics_server

            try:
                runner = await start_metrics_server(core_settings.http_host, metrics_port)
            except OSError as exc:
                log.warning("metrics server not started", extra={"port": metrics_port, "error": str(exc)})
        try:
            async with open_runtime(core_settings) as rt:
                await run_labels(rt, settings)
        finally:
            if runner is not None:
                await runner.cleanup()

    run_async(_until_signalled(_main()))


commands: list[click.Command] = [labels_command]
