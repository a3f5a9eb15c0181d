"""Settings shared by every plyr process, read from the environment (and `.env` if present).

Each package keeps its own settings next to its code (e.g. `appview/settings.py`) and reads them
with the helpers here, so that one place explains how a variable becomes a value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

from core.errors import ConfigError

_dotenv_loaded = False


def load_env_file() -> None:
    """Load `.env` from the working directory once; real environment variables win."""
    global _dotenv_loaded
    if not _dotenv_loaded:
        load_dotenv(Path.cwd() / ".env", override=False)
        _dotenv_loaded = True


def env_str(name: str, default: str | None = None) -> str | None:
    load_env_file()
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float) -> float:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


ALLOW_PRIVATE_NETWORK_VAR = "PLYR_ALLOW_PRIVATE_NETWORK"


def allow_private_network() -> bool:
    """PLYR_ALLOW_PRIVATE_NETWORK (default false): whether fetches that network data points at
    (DID documents, handles, PDS endpoints) may reach loopback, private and other non-public
    addresses, and did:web:localhost over plain http. Only for tests and a PDS on your own
    machine: anyone can publish a DID document naming such an address (see core/net.py)."""
    return env_bool(ALLOW_PRIVATE_NETWORK_VAR, False)


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("plyr", appauthor=False))


@dataclass(frozen=True)
class CoreSettings:
    database_url: str | None
    data_dir: Path
    db_pool_min: int
    db_pool_max: int
    db_statement_timeout_ms: int
    log_level: str
    log_format: str
    http_host: str
    allow_private_network: bool = False

    @classmethod
    def from_env(cls) -> CoreSettings:
        log_format = (env_str("PLYR_LOG_FORMAT", "text") or "text").lower()
        if log_format not in ("text", "json"):
            raise ConfigError(f"PLYR_LOG_FORMAT={log_format!r} must be text or json")
        pool_min = env_int("PLYR_DB_POOL_MIN", 1, minimum=0)
        pool_max = env_int("PLYR_DB_POOL_MAX", 10, minimum=1)
        if pool_max < pool_min:
            raise ConfigError(f"PLYR_DB_POOL_MAX={pool_max} is below PLYR_DB_POOL_MIN={pool_min}")
        return cls(
            database_url=env_str("DATABASE_URL"),
            data_dir=Path(env_str("PLYR_DATA_DIR") or default_data_dir()).expanduser(),
            db_pool_min=pool_min,
            db_pool_max=pool_max,
            db_statement_timeout_ms=env_int("PLYR_DB_STATEMENT_TIMEOUT_MS", 30_000, minimum=0),
            log_level=(env_str("PLYR_LOG_LEVEL", "INFO") or "INFO").upper(),
            log_format=log_format,
            http_host=env_str("PLYR_HTTP_HOST", "127.0.0.1") or "127.0.0.1",
            allow_private_network=allow_private_network(),
        )
