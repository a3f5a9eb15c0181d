"""What every `plyr` command shares (settings, logging, the event loop, error reporting) and the
commands of core itself (migrate, db-url, lexicon check).

The `plyr` group is put together at the top, in plyr/cli.py: core cannot import the services.
Each package lists its commands in its `cli.py` (`commands`).
"""

from __future__ import annotations

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


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed."""
    import asyncio  # here, not at the top: `plyr --help` does not need an event loop

    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def load_settings() -> CoreSettings:
    settings = CoreSettings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    return settings


@click.command()
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


@click.command("db-url")
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


@click.group()
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


commands: list[click.Command] = [migrate, db_url, lexicon]


def run_cli(group: click.Group) -> None:
    """Run `group`, reporting expected failures as one line and an exit status."""
    try:
        group(standalone_mode=False)
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

