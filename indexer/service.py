"""Running the indexer: pick the source, take the stream lock, consume, recover from failures.

`run(rt)` is the entry point of `plyr up`; `plyr index` calls `run_indexer` with its options.
A live stream is supervised: database or connection failures, a lost lock or a cursor moved
by another indexer end the current consumer, which is restarted (as a standby first) from the
stored cursor after a backoff; nothing in memory is needed to resume. A capture replay runs
once and returns when the file is consumed and committed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg

from core.backoff import Backoff
from core.errors import DatabaseError
from core.runtime import Runtime
from indexer.consumer import Consumer
from indexer.ha import LeadershipLost, run_as_leader
from indexer.settings import IndexerSettings
from indexer.sources import CaptureSource, JetstreamSource, RelaySource, Source
from indexer.verify import Verifier
from indexer.writer import CursorConflict, default_lexicons
from indexer.writer.network_match import fill_track_keys, sync_page_hosts
from protocol.identity import IdentityResolving
from protocol.lexicon import Lexicons

log = logging.getLogger("plyr.indexer")


def make_source(
    settings: IndexerSettings, *, kind: str | None = None, url: str | None = None, replay: Path | None = None
) -> Source:
    if replay is not None:
        return CaptureSource(replay)
    kind = kind or settings.source
    if kind == "jetstream":
        return JetstreamSource(url or settings.jetstream_url)
    return RelaySource(url or settings.relay_url)


def _warn_no_verify(source: Source, verify: bool) -> None:
    if source.format == "cbor" and not verify:
        log.warning(
            "SIGNATURE CHECKS ARE OFF (--no-verify / PLYR_VERIFY=false): commits are indexed "
            "without checking who signed them; block CIDs are still checked",
            extra={"source": source.name},
        )


async def prepare_matching(pool: asyncpg.Pool, hosts: list[str]) -> None:
    """Before consuming: our track page hosts as configured, and the match keys of tracks
    indexed before network plays were (writer/network_match.py); both re-match what they change."""
    async with pool.acquire() as conn:
        changed = await sync_page_hosts(conn, hosts)
        filled = await fill_track_keys(conn)
    if changed or filled:
        log.info("network play matching prepared", extra={"hosts_changed": sorted(changed), "tracks_keyed": filled})


async def run_indexer(
    database_url: str,
    pool: asyncpg.Pool,
    settings: IndexerSettings,
    source: Source,
    *,
    verify: bool,
    start_cursor: int | None = None,
    resolver: IdentityResolving | None = None,
    lexicons: Lexicons | None = None,
    on_consumer: Any | None = None,
    resolve_handles: bool | None = None,
) -> None:
    """Consume `source` into the database; returns only when a finite source ends.

    Handles of indexed actors are verified in the background, except (by default) when
    replaying a capture without signature checks, which is how offline replays are run.
    `resolver` is needed for signature checks and handles (the process's, `rt.identity`).
    """
    _warn_no_verify(source, verify)
    lexicons = lexicons or default_lexicons()
    await prepare_matching(pool, settings.track_page_hosts.split(","))
    if resolve_handles is None:
        resolve_handles = resolver is not None and (source.live or verify)
    backoff = Backoff(base=1.0, cap=60.0)
    first = True
    while True:
        consumer = Consumer(
            pool, source, lexicons=lexicons,
            verifier=Verifier(resolver, verify_signatures=verify and source.format == "cbor"),
            resolver=resolver if resolve_handles else None, batch_size=settings.batch_size, batch_delay=settings.batch_delay,
            start_cursor=start_cursor if first else None,
        )  # fmt: skip
        if on_consumer is not None:
            on_consumer(consumer)
        first = False
        try:
            if not source.live:
                await consumer.run()
                return
            await run_as_leader(database_url, source.name, consumer.run, poll=settings.standby_poll)
            return
        except (LeadershipLost, CursorConflict, asyncpg.PostgresError, asyncpg.InterfaceError,
                DatabaseError, OSError) as exc:  # fmt: skip
            if not source.live:
                raise
            delay = backoff.next_delay()
            log.error(
                "indexer stopped; restarting from the stored cursor",
                extra={"error": f"{exc.__class__.__name__}: {exc}", "retry_in_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)


async def run(rt: Runtime, *, page_host: str | None = None) -> None:
    """`plyr up`: the live indexer with the settings from the environment (metrics are served by
    the appview's /metrics from the same registry). `page_host`: the host of the AppView run
    beside it, whose track pages network plays may name when PLYR_TRACK_PAGE_HOSTS is unset."""
    settings = IndexerSettings.from_env()
    if page_host and not settings.track_page_hosts:
        settings = IndexerSettings.from_env(overrides={"track_page_hosts": page_host})
    source = make_source(settings)
    await run_indexer(
        rt.database_url, rt.pool, settings, source, verify=settings.verify,
        resolver=rt.identity, lexicons=rt.lexicons,
    )  # fmt: skip
