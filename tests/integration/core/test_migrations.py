from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core import db
from core.errors import MigrationError
from core.migrate import MIGRATIONS_DIR, apply_migrations, load_migrations


async def test_template_has_every_migration(database_url: str) -> None:
    conn = await db.connect(database_url)
    try:
        rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")
        assert [r["name"] for r in rows] == [m.name for m in load_migrations()]
        for table in ("actors", "tracks", "likes", "comments", "lists", "list_items", "profiles",
                      "tombstones", "cursors", "dead_letters", "track_counts"):
            assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table), table
        # applying again is a no-op
        assert await apply_migrations(conn) == []
    finally:
        await conn.close()


async def test_concurrent_runs_apply_once(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "0001_a.sql").write_text("CREATE TABLE race_a (x int);")
    (folder / "0002_b.sql").write_text("SELECT pg_sleep(0.2); CREATE TABLE race_b (x int);")
    conns = [await db.connect(database_url) for _ in range(3)]
    try:
        # schema_migrations already exists in this database with other versions: use a schema of its own
        for c in conns:
            await c.execute("CREATE SCHEMA IF NOT EXISTS race; SET search_path = race")
        results = await asyncio.gather(*(apply_migrations(c, folder) for c in conns))
        applied = sorted(name for r in results for name in r)
        assert applied == ["0001_a.sql", "0002_b.sql"]
    finally:
        for c in conns:
            await c.close()


async def test_edited_migration_is_an_error(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "0001_a.sql").write_text("CREATE TABLE edited_a (x int);")
    conn = await db.connect(database_url)
    try:
        await conn.execute("CREATE SCHEMA edit; SET search_path = edit")
        await apply_migrations(conn, folder)
        (folder / "0001_a.sql").write_text("CREATE TABLE edited_a (x bigint);")
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await apply_migrations(conn, folder)
    finally:
        await conn.close()


async def test_broken_migration_names_file_and_line(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "0001_ok.sql").write_text("CREATE TABLE ok_t (x int);")
    (folder / "0002_bad.sql").write_text("CREATE TABLE bad_t (x int);\nCREAT TABLE oops (y int);\n")
    conn = await db.connect(database_url)
    try:
        await conn.execute("CREATE SCHEMA broken; SET search_path = broken")
        with pytest.raises(MigrationError, match=r"0002_bad.sql at line 2"):
            await apply_migrations(conn, folder)
        # the broken file left nothing behind; the good one stayed
        assert await conn.fetchval("SELECT to_regclass('broken.bad_t')") is None
        assert await conn.fetchval("SELECT to_regclass('broken.ok_t')") is not None
    finally:
        await conn.close()


def test_migration_names_are_checked(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("")
    with pytest.raises(MigrationError, match="NNNN_lowercase_name"):
        load_migrations(tmp_path)
    assert load_migrations(MIGRATIONS_DIR)
