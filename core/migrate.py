"""Schema migrations: numbered SQL files applied in order, once each, under an advisory lock.

`migrations/NNNN_name.sql` files are applied in a transaction each and recorded in
`schema_migrations` with their sha-256. A recorded file whose content changed is an error: fix
forward with a new file instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from core.db import Connection
from core.errors import MigrationError

log = logging.getLogger("plyr.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Any fixed number shared by every plyr process; "plyr" in ASCII.
MIGRATION_LOCK_ID = 0x706C7972
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_lowercase_name.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migration files share a number")
    return migrations


async def apply_migrations(conn: Connection, folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to call from many processes."""
    migrations = load_migrations(folder)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {
            r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        }
        done: list[str] = []
        for migration in migrations:
            recorded = applied.get(migration.version)
            if recorded is not None:
                if recorded["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migrations/{migration.name} was edited after it was applied "
                        f"(checksum differs from the one recorded); add a new migration instead"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                line = f" at line {_error_line(migration.sql, exc)}" if _error_line(migration.sql, exc) else ""
                raise MigrationError(f"migrations/{migration.name}{line}: {exc}") from exc
            log.info("applied migration", extra={"migration": migration.name})
            done.append(migration.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)


def _error_line(sql: str, exc: asyncpg.PostgresError) -> int | None:
    position = getattr(exc, "position", None)
    if not position:
        return None
    return sql[: int(position)].count("\n") + 1
