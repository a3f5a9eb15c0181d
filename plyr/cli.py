"""The `plyr` command: core's commands, each package's, and `plyr up` over all services.

Package command modules are imported here, by name, in the order `plyr --help` lists them;
each keeps its heavy imports inside its commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from appview import cli as appview_cli
from appview.moderation import cli as moderation_cli
from appview.moderation import copyright_cli as review_cli
from core import cli as core_cli
from indexer import cli as indexer_cli
from indexer.backfill import cli as backfill_cli
from indexer.labels import cli as labels_cli
from media import cli as media_cli
from media.copyright import cli as copyright_cli
from plyr.services import SERVICES
from publish import cli as publish_cli

if TYPE_CHECKING:
    from core.settings import CoreSettings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """plyr: the AppView and firehose indexer of a music platform on the AT Protocol."""


@cli.command()
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(list(SERVICES)),
    help="Run only these services (repeatable). Default: all of them.",
)
def up(only: tuple[str, ...]) -> None:
    """Run everything in one process: database, migrations, indexer, resync, labels, appview, media.

    Ctrl-C stops it (and the embedded PostgreSQL, when that is in use).
    """
    from core.runtime import open_runtime, run_until_signalled

    settings = core_cli.load_settings()
    chosen = {name: entry for name, entry in SERVICES.items() if not only or name in only}
    _ensure_labeler_key(settings)

    async def _up() -> None:
        async with open_runtime(settings) as rt:
            await run_until_signalled(rt, chosen)

    core_cli.run_async(_up())


def _ensure_labeler_key(settings: CoreSettings) -> None:
    """`plyr up` runs a labeler out of the box: without a configured key it makes one in the
    data folder (mode 600), which every later start (and `plyr serve` on the same data) uses."""
    from appview.labeler.settings import default_key_path, write_new_key
    from core.settings_spec import env_str

    if env_str("PLYR_LABELER_KEY") or env_str("PLYR_LABELER_KEY_FILE"):
        return
    path = default_key_path(settings)
    try:
        key = write_new_key(path)
    except FileExistsError:
        return
    click.echo(f"created a labeler key for this AppView's moderation labels: {path} ({key.public_key().did_key()})", err=True)


for _module in (core_cli, indexer_cli, backfill_cli, labels_cli, appview_cli, moderation_cli, media_cli, publish_cli):
    for _command in _module.commands:
        cli.add_command(_command)


@cli.group("moderation")
def moderation() -> None:
    """Copyright scanning: the reference catalog, scans of the audio we hold, and their review."""


# One group over two services: media scans (media/copyright/cli.py), the AppView reviews
# (appview/moderation/copyright_cli.py); neither imports the other.
for _command in (*copyright_cli.commands, *review_cli.commands):
    moderation.add_command(_command)


def main() -> None:
    core_cli.run_cli(cli)
