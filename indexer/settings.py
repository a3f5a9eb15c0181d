"""Indexer settings, declared once each (see core/settings_spec.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import (
    DEFAULT_JETSTREAM_URL,
    DEFAULT_RELAY_URL,
    FIREHOSE_SOURCE,
    JETSTREAM_URL,
    RELAY_URL,
)
from core.settings_spec import Setting, Settings, setting

__all__ = [
    "CRASH_AT", "DEFAULT_JETSTREAM_URL", "DEFAULT_RELAY_URL", "BackfillSettings", "IndexerSettings", "ResyncSettings",
]  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class IndexerSettings(Settings):
    source: str = FIREHOSE_SOURCE.field()  # relay | jetstream
    relay_url: str = RELAY_URL.field()
    jetstream_url: str = JETSTREAM_URL.field()
    verify: bool = setting("PLYR_VERIFY", True, "check commit signatures (CIDs are always checked)", group="indexer")
    metrics_port: int = setting(
        "PLYR_INDEXER_METRICS_PORT", 9101,
        "`/metrics` of `plyr index` (under `plyr up`: the AppView's `/metrics`); 0: none",
        minimum=0, group="indexer",
    )  # fmt: skip
    batch_size: int = setting(
        "PLYR_INDEXER_BATCH_SIZE", 1000, "ops per write transaction, at most", minimum=1, group="indexer"
    )
    # Declared in milliseconds, held in seconds: how long a batch (and so the cursor) may wait.
    batch_delay: float = setting(
        "PLYR_INDEXER_BATCH_MS", 300.0, "milliseconds a batch (and so the cursor) may wait before it is written",
        above=0, maximum=5000, bounds_text="between 1 and 5000", convert=lambda ms: ms / 1000,
        group="indexer",
    )  # fmt: skip
    standby_poll: float = setting(
        "PLYR_INDEXER_STANDBY_POLL_S", 1.0, "how often a standby tries the leader lock (seconds)", group="indexer"
    )
    track_page_hosts: str = setting(
        "PLYR_TRACK_PAGE_HOSTS", "",
        "comma-separated hosts (with `:port` when not the default) whose `/track/<n>` pages are "
        "our AppView's (the host of its PLYR_PUBLIC_URL): a network play naming one matches that "
        "track by URL",
        default_text="none; under `plyr up`, the host of the AppView's PLYR_PUBLIC_URL", group="indexer",
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ResyncSettings(Settings):
    """The loop that fetches again the repos the live indexer marked (indexer/backfill/resync.py)."""

    interval_s: float = setting(
        "PLYR_RESYNC_INTERVAL_S", 5.0, "seconds between resync rounds when nothing is due", group="indexer"
    )
    batch: int = setting("PLYR_RESYNC_BATCH", 16, "repos taken per resync round", minimum=1, group="indexer")
    concurrency: int = setting(
        "PLYR_RESYNC_CONCURRENCY", 4, "repos fetched at once by the resync loop", minimum=1, group="indexer"
    )


@dataclass(frozen=True, kw_only=True)
class BackfillSettings(Settings):
    relay_url: str = setting(
        "PLYR_BACKFILL_RELAY_URL", "https://relay1.us-east.bsky.network",
        "relay whose `listReposByCollection` lists the repos `plyr backfill` fetches "
        "(when no other source is given)",
        group="indexer",
    )  # fmt: skip
    car_index: str = setting(
        "PLYR_CAR_INDEX", "native",
        "`native` (the C extension, when built) or `python` (the slower fallback) to frame repo CARs",
        choices=("native", "python"), group="indexer",
    )  # fmt: skip


# Read once, at import, by indexer/crashpoints.py (which parses it: point and hit count).
CRASH_AT = Setting(
    "PLYR_CRASH_AT", str, None,
    "tests only: `POINT[:N]` ends the process at the N-th pass through that seam of the write "
    "path (indexer/crashpoints.py)",
    group="indexer",
)  # fmt: skip
