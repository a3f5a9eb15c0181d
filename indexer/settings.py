"""Indexer settings, read from the environment (see core/settings.py for how)."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigError
from core.settings import env_bool, env_float, env_int, env_str

DEFAULT_RELAY_URL = "wss://bsky.network"
DEFAULT_JETSTREAM_URL = "wss://jetstream2.us-east.bsky.network/subscribe"


@dataclass(frozen=True)
class IndexerSettings:
    source: str  # relay | jetstream
    relay_url: str
    jetstream_url: str
    verify: bool  # commit signature checks (CIDs are always checked)
    metrics_port: int
    batch_size: int  # ops per write transaction, at most
    batch_delay: float  # seconds a batch (and so the cursor) may wait before it is written
    standby_poll: float  # how often a standby tries to take the lock

    @classmethod
    def from_env(cls) -> IndexerSettings:
        source = (env_str("PLYR_INDEXER_SOURCE", "relay") or "relay").lower()
        if source not in ("relay", "jetstream"):
            raise ConfigError(f"PLYR_INDEXER_SOURCE={source!r} must be relay or jetstream")
        delay = env_float("PLYR_INDEXER_BATCH_MS", 300) / 1000
        if not 0 < delay <= 5:
            raise ConfigError("PLYR_INDEXER_BATCH_MS must be between 1 and 5000")
        return cls(
            source=source,
            relay_url=env_str("PLYR_RELAY_URL", DEFAULT_RELAY_URL) or DEFAULT_RELAY_URL,
            jetstream_url=env_str("PLYR_JETSTREAM_URL", DEFAULT_JETSTREAM_URL) or DEFAULT_JETSTREAM_URL,
            verify=env_bool("PLYR_VERIFY", True),
            metrics_port=env_int("PLYR_INDEXER_METRICS_PORT", 9101, minimum=0),
            batch_size=env_int("PLYR_INDEXER_BATCH_SIZE", 1000, minimum=1),
            batch_delay=delay,
            standby_poll=env_float("PLYR_INDEXER_STANDBY_POLL_S", 1.0),
        )
