"""Settings shared by every plyr process, read from the environment (and `.env` if present).

Each package declares its own settings next to its code (e.g. `appview/settings.py`) with the
declarations of core/settings_spec.py; the README table is generated from all of them
(core/settings_doc.py). Two groups used by more than one service are declared here: the rate
limits (AppView and media) and the firehose a deployment follows (read by the indexer, shown by
the AppView's front page, which does not import the indexer).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.settings_spec import Setting, Settings, env_str, load_env_file, setting

__all__ = [
    "ALLOW_PRIVATE_NETWORK_VAR", "CoreSettings", "FirehoseSettings", "RateLimitSettings", "allow_private_network",
    "default_data_dir", "env_str", "load_env_file",
]  # fmt: skip

ALLOW_PRIVATE_NETWORK = Setting(
    "PLYR_ALLOW_PRIVATE_NETWORK", bool, False,
    "let DID, handle, PDS and blob fetches reach loopback/private addresses and "
    "`did:web:localhost` over http (tests, local PDS only: anyone can publish a DID document "
    "naming such an address, see core/net.py)",
    group="core",
)  # fmt: skip
ALLOW_PRIVATE_NETWORK_VAR = ALLOW_PRIVATE_NETWORK.env


def allow_private_network() -> bool:
    """PLYR_ALLOW_PRIVATE_NETWORK, read now (tests switch it while running)."""
    return bool(ALLOW_PRIVATE_NETWORK.read())


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("plyr", appauthor=False))


@dataclass(frozen=True, kw_only=True)
class CoreSettings(Settings):
    database_url: str | None = setting(
        "DATABASE_URL", None, "`postgresql://user:pass@host:port/db`",
        default_text="unset: embedded PostgreSQL", group="core",
    )  # fmt: skip
    data_dir: Path = setting(
        "PLYR_DATA_DIR", None, "embedded Postgres data and local media", required=True,
        convert=lambda text: Path(text).expanduser(),
        default_text="the user data dir (`~/.local/share/plyr`)", group="core",
    )  # fmt: skip
    db_pool_min: int = setting("PLYR_DB_POOL_MIN", 1, "asyncpg pool size, at least", minimum=0, group="core")
    db_pool_max: int = setting("PLYR_DB_POOL_MAX", 10, "asyncpg pool size, at most", minimum=1, group="core")
    db_statement_timeout_ms: int = setting(
        "PLYR_DB_STATEMENT_TIMEOUT_MS", 30_000, "server-side statement timeout", minimum=0, group="core"
    )
    log_level: str = setting(
        "PLYR_LOG_LEVEL", "INFO", "log level (DEBUG, INFO, WARNING, ERROR)", convert=str.upper, group="core"
    )
    log_format: str = setting(
        "PLYR_LOG_FORMAT", "text", "`text` (key=value) or `json`", choices=("text", "json"), group="core"
    )
    http_host: str = setting("PLYR_HTTP_HOST", "127.0.0.1", "address the HTTP services listen on", group="core")
    plc_url: str = setting("PLYR_PLC_URL", "https://plc.directory", "PLC directory for did:plc", group="core")
    handle_resolver_url: str | None = setting(
        "PLYR_HANDLE_RESOLVER_URL", None, "resolve handles through this service's `resolveHandle`",
        default_text="unset (DNS + HTTPS)", group="core",
    )  # fmt: skip
    allow_private_network: bool = ALLOW_PRIVATE_NETWORK.field()

    @classmethod
    def finish(cls, values: dict[str, Any], core: Settings | None) -> None:
        if values["db_pool_max"] < values["db_pool_min"]:
            raise ConfigError(
                f"PLYR_DB_POOL_MAX={values['db_pool_max']} is below PLYR_DB_POOL_MIN={values['db_pool_min']}"
            )
        if values["data_dir"] is None:
            values["data_dir"] = default_data_dir().expanduser()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses or networks (an address is its own /32 or /128)."""
    networks: list[Network] = []
    for item in (i.strip() for i in text.split(",")):
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(f"PLYR_TRUSTED_PROXIES: {item!r} is not an IP address or network") from None
    return tuple(networks)


@dataclass(frozen=True, kw_only=True)
class RateLimitSettings(Settings):
    enabled: bool = setting("PLYR_RATE_LIMIT", True, "on/off", group="rate limits")
    window_seconds: int = setting(
        "PLYR_RATE_LIMIT_WINDOW_SECONDS", 300, "fixed window", minimum=1, group="rate limits"
    )
    ip_limit: int = setting(
        "PLYR_RATE_LIMIT_IP", 3000, "requests per window per client address (IPv6: per /64)",
        minimum=1, group="rate limits",
    )  # fmt: skip
    did_limit: int = setting(
        "PLYR_RATE_LIMIT_DID", 3000, "requests per window per verified DID", minimum=1, group="rate limits"
    )
    loopback: bool = setting(
        "PLYR_RATE_LIMIT_LOOPBACK", False,
        "limit loopback clients too (off: local tools and tests are never limited)", group="rate limits",
    )  # fmt: skip
    sync_seconds: float = setting(
        "PLYR_RATE_LIMIT_SYNC_SECONDS", 0.5,
        "how often each process adds its counts to Postgres (the accuracy/cost knob, see core/ratelimit.py)",
        above=0, group="rate limits",
    )  # fmt: skip
    trusted_proxies: tuple[Network, ...] = setting(
        "PLYR_TRUSTED_PROXIES", "",
        "comma-separated addresses/networks whose `X-Forwarded-For` is believed (never by default)",
        convert=_networks, default_text="none", group="rate limits",
    )  # fmt: skip


DEFAULT_RELAY_URL = "wss://bsky.network"
DEFAULT_JETSTREAM_URL = "wss://jetstream2.us-east.bsky.network/subscribe"

FIREHOSE_SOURCE = Setting(
    "PLYR_INDEXER_SOURCE", str, "relay", "what the indexer follows: `relay` or `jetstream`",
    choices=("relay", "jetstream"), group="indexer",
)  # fmt: skip
RELAY_URL = Setting("PLYR_RELAY_URL", str, DEFAULT_RELAY_URL, "firehose (`subscribeRepos`)", group="indexer")
JETSTREAM_URL = Setting(
    "PLYR_JETSTREAM_URL", str, DEFAULT_JETSTREAM_URL, "Jetstream endpoint",
    default_text="a public Jetstream", group="indexer",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class FirehoseSettings(Settings):
    """The stream this deployment's indexer follows (the indexer's settings hold the same
    declarations; the AppView shows them on its front page without importing the indexer)."""

    source: str = FIREHOSE_SOURCE.field()
    relay_url: str = RELAY_URL.field()
    jetstream_url: str = JETSTREAM_URL.field()


def core_or_env(core: Settings | None) -> CoreSettings:
    """The core settings a package's `finish` derives its defaults from: the ones passed in, or
    read from the environment when none were."""
    if core is None:
        return CoreSettings.from_env()
    if not isinstance(core, CoreSettings):
        raise TypeError(f"core settings expected, got {type(core).__name__}")
    return core


def _dids(value: str) -> tuple[str, ...]:
    from protocol.syntax.identifiers import is_did

    dids = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    bad = [did for did in dids if not is_did(did)]
    if bad:
        raise ConfigError(f"not a DID: {bad[0]!r}")
    return dids


@dataclass(frozen=True, kw_only=True)
class LabelSettings(Settings):
    """Which labelers this deployment listens to and trusts: read by the label subscriber
    (indexer/labels/) and by the AppView's views (appview/labels.py), which do not import
    each other. The AppView's own labeler (its service DID) joins all three lists when it has
    a signing key (appview/labeler/)."""

    labelers: tuple[str, ...] = setting(
        "PLYR_LABELERS", "", "comma-separated labeler DIDs whose labels are subscribed to and stored",
        convert=_dids, default_text="none", group="labels",
    )  # fmt: skip
    moderation_labelers: tuple[str, ...] = setting(
        "PLYR_MODERATION_LABELERS", "",
        "labelers (among the subscribed) whose `!takedown`, `!suspend` and `!hide` remove content "
        "from every view and count, whatever the client accepts",
        convert=_dids, default_text="none", group="labels",
    )  # fmt: skip
    default_labelers: tuple[str, ...] = setting(
        "PLYR_DEFAULT_LABELERS", "",
        "labelers whose labels views carry when a request has no `atproto-accept-labelers` header",
        convert=_dids, default_text="the moderation labelers", group="labels",
    )  # fmt: skip

    def including(self, did: str) -> LabelSettings:
        """These settings with `did` (the AppView's own labeler) subscribed to, moderating, and
        among the default labelers when those are listed."""
        from dataclasses import replace

        def add(dids: tuple[str, ...]) -> tuple[str, ...]:
            return dids if did in dids else (*dids, did)

        return replace(
            self,
            labelers=add(self.labelers),
            moderation_labelers=add(self.moderation_labelers),
            default_labelers=add(self.default_labelers) if self.default_labelers else (),
        )
