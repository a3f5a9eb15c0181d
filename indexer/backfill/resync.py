"""The resync loop: repos the live indexer marked (`actors.needs_resync`) are fetched again.

The indexer marks a repo on `#sync`, a `tooBig` commit or a rev gap; this loop, started inside
`plyr index` / `plyr up`, fetches those repos with the same per-repo pipeline as backfill. A
mark is cleared only when the snapshot is at least as new as the newest rev seen for the repo.
A repo is not fetched again sooner than 30 s after its last fetch, and failures back off
exponentially (30 s * 2^attempts, at most an hour), so a broken PDS is not hammered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
from prometheus_client import Gauge

from core.backoff import backoff_delay
from core.runtime import Runtime
from indexer.backfill.audit import refresh_audit_metrics
from indexer.backfill.http import Politeness
from indexer.backfill.repo import RepoSyncer
from indexer.backfill.runner import open_syncer, sync_many
from indexer.settings import ResyncSettings
from protocol.identity import IdentityResolving

log = logging.getLogger("plyr.backfill")

RESYNC_PENDING = Gauge("plyr_resync_pending", "Repos marked for resync and not yet fetched.")

_DUE = """
SELECT a.did FROM actors a LEFT JOIN backfill_repos b ON b.did = a.did
WHERE a.needs_resync
  AND (b.did IS NULL
       OR b.updated_at < now() - make_interval(secs => least(3600, 30 * power(2, least(b.attempts, 7)))))
ORDER BY a.updated_at
LIMIT $1
"""


async def run_resync_loop(
    rt: Runtime,
    *,
    interval: float | None = None,
    batch: int | None = None,
    politeness: Politeness | None = None,
    resolver: IdentityResolving | None = None,
) -> None:
    """Fetch marked repos until cancelled (or `rt.stopping` is set); `resolver` replaces the
    process's (`rt.identity`), for tests."""
    settings = ResyncSettings.from_env(overrides={"interval_s": interval, "batch": batch or None})
    interval, batch = settings.interval_s, settings.batch
    rules = politeness or Politeness(concurrency=settings.concurrency)
    log.info("resync loop started", extra={"interval_s": interval})
    last_metrics = 0.0
    failures = 0
    async with open_syncer(
        rt.pool, politeness=rules, resolver=resolver or rt.identity, lexicons=rt.lexicons
    ) as syncer:
        while not rt.stopping.is_set():
            try:
                if time.monotonic() - last_metrics > 60:
                    last_metrics = time.monotonic()
                    await refresh_audit_metrics(rt.pool)
                    RESYNC_PENDING.set(
                        await rt.pool.fetchval("SELECT count(*) FROM actors WHERE needs_resync")
                    )
                synced = await _round(rt, syncer, batch, rules.concurrency)
                failures = 0
                delay = 0.0 if synced else interval
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                # The database is away: keep the loop (and `plyr up`) alive and try again later.
                failures += 1
                delay = backoff_delay(failures, base=interval, cap=60.0)
                log.error("resync round failed", extra={"error": str(exc), "retry_in_s": delay})
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rt.stopping.wait(), delay)


async def _round(rt: Runtime, syncer: RepoSyncer, batch: int, workers: int) -> int:
    """Sync the repos that are due; returns how many (0: none were due)."""
    dids = [r["did"] for r in await rt.pool.fetch(_DUE, batch)]
    if not dids:
        return 0
    results = await sync_many(syncer, dids, workers=workers, source="resync")
    log.info(
        "resynced repos",
        extra={"repos": len(results), "failed": sum(1 for r in results if not r.ok)},
    )
    return len(results)
