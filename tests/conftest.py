"""Shared fixtures: a real PostgreSQL for every test that asks for one.

The server is `PLYR_TEST_DATABASE_URL` or `DATABASE_URL` when set, else an embedded PostgreSQL in
`.pytest-pg/` (kept between runs: it starts in under a second). Migrations are applied once to a
template database; each test gets its own database cloned from it, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from core import db
from core.migrate import apply_migrations
from core.settings import ALLOW_PRIVATE_NETWORK_VAR, CoreSettings

# Every test server (fake PLC/PDS, the e2e PDS, plyr subprocesses) listens on loopback, which
# outbound fetches refuse by default (core/net.py); tests of that guard pass
# allow_private_network=False themselves.
os.environ[ALLOW_PRIVATE_NETWORK_VAR] = "true"
# Nothing of the developer's own data folder (a labeler key `plyr up` made, local media) reaches
# a test: settings read from the environment default to a folder of this test session.
if not os.environ.get("PLYR_DATA_DIR"):
    import atexit
    import shutil
    import tempfile

    os.environ["PLYR_DATA_DIR"] = tempfile.mkdtemp(prefix="plyr-test-data-")
    atexit.register(shutil.rmtree, os.environ["PLYR_DATA_DIR"], True)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def reference_path(relative: str) -> Path:
    """A file of ../shared/reference (the interop vectors, specs and published lexicons)."""
    return SHARED / "reference" / relative


def reference_json(relative: str) -> list:
    """Parsed reference vectors, or [] when ../shared is absent: a test parametrized over them
    is then reported by pytest as skipped ("got empty parameter set") instead of erroring."""
    path = reference_path(relative)
    if not path.exists():
        return []
    return json.loads(path.read_text())


def require_reference(relative: str) -> Path:
    path = reference_path(relative)
    if not path.exists():
        pytest.skip(f"../shared is absent ({path}): reference vectors not available")
    return path


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("PLYR_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    import dataclasses

    settings = dataclasses.replace(CoreSettings.from_env(), database_url=None, data_dir=ROOT / ".pytest-pg")
    yield db.start_embedded(settings)


@pytest.fixture(scope="session")
async def pg_template(pg_server_url: str) -> AsyncIterator[str]:
    """A database with every migration applied, used as the template for per-test databases."""
    name = f"plyr_tpl_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await db.connect(_with_database(pg_server_url, name))
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database_url(pg_server_url: str, pg_template: str) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database of this test's own."""
    name = f"plyr_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        yield _with_database(pg_server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    settings = CoreSettings.from_env()
    p = await db.create_pool(database_url, settings, min_size=1, max_size=5)
    yield p
    await p.close()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent ({SHARED}): reference vectors not available")
    return SHARED


def skip_unless_required(reason: str) -> None:
    """Skip a test whose outside tool (npm, Chromium) is missing — unless this run must cover
    everything (`PLYR_TESTS_REQUIRE_ALL=1`, set by CI), where a missing tool is a failure."""
    if os.environ.get("PLYR_TESTS_REQUIRE_ALL") == "1":
        pytest.fail(f"required by PLYR_TESTS_REQUIRE_ALL but unavailable: {reason}")
    pytest.skip(reason)
