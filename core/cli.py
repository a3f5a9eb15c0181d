"""The `plyr` command. Each package adds its own commands from its `cli.py` (`commands` list)."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from core.errors import PlyrError
from core.logging import configure_logging
from core.settings import CoreSettings
from protocol.errors import ProtocolError

T = TypeVar("T")

# Packages whose `cli.commands` join the top-level group when the package exists.
_COMMAND_PACKAGES = ("indexer.cli", "indexer.backfill.cli", "appview.cli", "media.cli")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def load_settings() -> CoreSettings:
    settings = CoreSettings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """plyr: the AppView and firehose indexer of a music platform on the AT Protocol."""


@cli.command()
def migrate() -> None:
    """Apply pending database migrations (embedded Postgres unless DATABASE_URL is set)."""
    from core import db
    from core.migrate import apply_migrations

    settings = load_settings()

    async def _migrate() -> list[str]:
        conn = await db.connect(db.resolve_database_url(settings))
        try:
            return await apply_migrations(conn)
        finally:
            await conn.close()

    applied = run_async(_migrate())
    click.echo(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


@cli.command("db-url")
def db_url() -> None:
    """Print the URL of the database in use (starting the embedded one if needed)."""
    from core import db

    settings = load_settings()
    url = db.resolve_database_url(settings)
    click.echo(url)
    if not settings.database_url:
        click.echo(
            "(embedded PostgreSQL: it stops when this command exits; `plyr up` keeps it running)",
            err=True,
        )


@cli.command()
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(["indexer", "resync", "appview", "media"]),
    help="Run only these services (repeatable). Default: all of them.",
)
def up(only: tuple[str, ...]) -> None:
    """Run everything in one process: database, migrations, indexer, resync, appview, media.

    Ctrl-C stops it (and the embedded PostgreSQL, when that is in use).
    """
    from core.runtime import SERVICES, open_runtime, run_until_signalled

    settings = load_settings()

    async def _up() -> None:
        async with open_runtime(settings) as rt:
            await run_until_signalled(rt, list(only) or list(SERVICES))

    run_async(_up())


@cli.group()
def lexicon() -> None:
    """Lexicon tools."""


@lexicon.command("check")
@click.argument("nsid")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--lexicons",
    "lexicon_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of lexicon documents (default: the project's lexicons/).",
)
def lexicon_check(nsid: str, file: Path, lexicon_dir: Path | None) -> None:
    """Validate the record in FILE (JSON) against lexicon NSID. Exit 1 when invalid."""
    from core.lexicons import LEXICONS_DIR
    from protocol.lexicon import Lexicons

    try:
        value = orjson.loads(file.read_bytes())
    except FileNotFoundError:
        raise PlyrError(f"{file}: no such file") from None
    except orjson.JSONDecodeError as exc:
        raise PlyrError(f"{file}: not valid JSON ({exc})") from None
    lexicons = Lexicons.load(lexicon_dir or LEXICONS_DIR)
    problems = lexicons.validate_record(nsid, value)
    if problems:
        for problem in problems:
            click.echo(f"{file}: {problem}", err=True)
        sys.exit(1)
    click.echo(f"{file}: valid {nsid}")


def _add_package_commands() -> None:
    for module_name in _COMMAND_PACKAGES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        for command in getattr(module, "commands", []):
            cli.add_command(command)


_add_package_commands()


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (PlyrError, ProtocolError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
