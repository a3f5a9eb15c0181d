"""`plyr backfill`: discover repos, record them as pending, fetch them with bounded concurrency.

State lives in `backfill_repos`, so an interrupted run continues where it stopped. Each repo's
failure is recorded with its reason and the run goes on; the summary lists the failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from core.errors import DatabaseError, PlyrError
from core.net import outbound_connector
from indexer.backfill import state
from indexer.backfill.car_index import NATIVE_FRAMING
from indexer.backfill.discovery import Discovery, discover
from indexer.backfill.extract import DEFAULT_MEMORY_LIMIT
from indexer.backfill.http import FetchError, PoliteClient, Politeness
from indexer.backfill.progress import Progress
from indexer.backfill.repo import RepoResult, RepoSyncer
from protocol.identity import IdentityResolving

log = logging.getLogger("plyr.backfill")

USER_AGENT = "plyr-appview (backfill)"
DEFAULT_REPO_SECONDS = 2.0  # the --dry-run estimate before any repo has been fetched here


@dataclass
class BackfillOptions:
    relay: str | None = None
    pds: list[str] = field(default_factory=list)
    dids: list[str] = field(default_factory=list)
    retry_failed: bool = False
    force: bool = False
    dry_run: bool = False
    verify_signatures: bool = True
    politeness: Politeness = field(default_factory=Politeness)
    spill_dir: Path | None = None
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    progress_tty: bool | None = None  # None: a bar when stderr is a terminal
    progress_interval: float = 10.0


@dataclass
class BackfillSummary:
    discovered: int = 0
    new: int = 0
    queued: int = 0
    done: int = 0
    records: int = 0
    car_bytes: int = 0
    seconds: float = 0.0
    rate_limited: int = 0
    retried: int = 0
    inactive_skipped: int = 0
    fetch_s: float = 0.0  # summed over repos (they overlap: compare with seconds x concurrency)
    write_s: float = 0.0
    estimate_s: float | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)

    def lines(self, dry_run: bool = False) -> list[str]:
        if dry_run:
            eta = f"{self.estimate_s:.0f} s" if self.estimate_s is not None else "unknown"
            return [
                f"dry run: {self.discovered} repo(s) discovered, {self.queued} to fetch "
                f"({self.discovered - self.queued} already done or failed); record counts: "
                f"not given by these sources; estimated time: {eta}",
            ]
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"backfill: {self.done} repo(s) done, {len(self.failures)} failed, of {self.queued} queued "
            f"({self.discovered} discovered, {self.new} new); {self.records} plyr record(s), "
            f"{self.car_bytes / 1e6:.1f} MB of CAR in {self.seconds:.1f} s ({rate:.0f} records/s); "
            f"{self.rate_limited} rate-limit answer(s), {self.retried} retr(ies); time per repo: "
            f"fetch {self.fetch_s / max(1, self.done):.3f} s, write {self.write_s / max(1, self.done):.3f} s",
        ]
        if self.failures:
            out.append("failed repos:")
            out.extend(f"  {did}: {reason}" for did, reason in self.failures)
        return out


@contextlib.asynccontextmanager
async def open_syncer(
    pool: asyncpg.Pool,
    *,
    politeness: Politeness | None = None,
    resolver: IdentityResolving,
    verify_signatures: bool = True,
    spill_dir: Path | None = None,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    lexicons: Any = None,
) -> AsyncIterator[RepoSyncer]:
    """A RepoSyncer with its HTTP session (closed on exit) and the process's identity resolver."""
    from indexer.writer import default_lexicons

    rules = politeness or Politeness()
    if NATIVE_FRAMING:
        log.info("CAR framing: C section index (protocol._car_index)")
    else:
        log.warning(
            "CAR framing: pure Python (protocol._car_index was not built: no C compiler at "
            "install, or PLYR_CAR_INDEX=python); backfill works, about 4x slower per repo"
        )
    # PDS endpoints come from DID documents: no private addresses unless the setting allows them.
    connector = outbound_connector(limit=rules.concurrency * 2, ttl_dns_cache=300)
    async with aiohttp.ClientSession(
        connector=connector, headers={"User-Agent": USER_AGENT}
    ) as session:
        yield RepoSyncer(
            pool, PoliteClient(session, rules), resolver, lexicons=lexicons or default_lexicons(),
            verify_signatures=verify_signatures, spill_dir=spill_dir, memory_limit=memory_limit,
        )  # fmt: skip


async def sync_many(
    syncer: RepoSyncer,
    dids: list[str],
    *,
    workers: int,
    source: str,
    progress: Progress | None = None,
) -> list[RepoResult]:
    """Sync `dids` with at most `workers` at a time (per-host limits apply inside the client)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for did in dids:
        queue.put_nowait(did)
    results: list[RepoResult] = []

    async def _worker() -> None:
        while True:
            try:
                did = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await syncer.sync(did, source=source)
            results.append(result)
            if progress is not None:
                progress.update(result.ok, result.records)

    await asyncio.gather(*(_worker() for _ in range(max(1, min(workers, len(dids))))))
    return results


async def run_backfill(
    pool: asyncpg.Pool,
    opts: BackfillOptions,
    *,
    resolver: IdentityResolving,
    lexicons: Any = None,
) -> BackfillSummary:
    summary = BackfillSummary()
    started = time.monotonic()
    async with open_syncer(
        pool, politeness=opts.politeness, resolver=resolver, verify_signatures=opts.verify_signatures,
        spill_dir=opts.spill_dir, memory_limit=opts.memory_limit, lexicons=lexicons,
    ) as syncer:  # fmt: skip
        discovery = Discovery(relay=opts.relay, pds=list(opts.pds), dids=list(opts.dids))
        try:
            found = await discover(syncer.client, discovery)
        except FetchError as exc:
            raise PlyrError(f"repo discovery failed: {exc.reason}") from exc
        summary.discovered = len(found)
        summary.inactive_skipped = discovery.skipped
        if opts.dry_run:
            known = await pool.fetch(
                "SELECT did, status FROM backfill_repos WHERE did = ANY($1::text[])", list(found)
            )
            status = {r["did"]: r["status"] for r in known}
            summary.queued = sum(
                1 for d in found
                if opts.force or status.get(d, "pending") == "pending"
                or (opts.retry_failed and status.get(d) == "failed")
            )  # fmt: skip
            per_repo = await state.mean_duration_s(pool) or DEFAULT_REPO_SECONDS
            summary.estimate_s = per_repo * summary.queued / max(1, opts.politeness.concurrency)
            return summary
        summary.new = await state.add_repos(pool, found)
        if opts.force:
            await state.reset(pool, found, "force")
        dids = await state.todo(pool, list(found), retry_failed=opts.retry_failed)
        summary.queued = len(dids)
        progress = Progress(len(dids), tty=opts.progress_tty, interval=opts.progress_interval)
        try:
            results = await sync_many(
                syncer,
                dids,
                workers=opts.politeness.concurrency,
                source="backfill",
                progress=progress,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise DatabaseError(
                f"database error during the backfill ({exc.__class__.__name__}: {exc}); "
                "repos not finished stay pending: run it again to continue"
            ) from exc
        finally:
            progress.close()
        summary.rate_limited = syncer.client.rate_limited
        summary.retried = syncer.client.retried
    for r in results:
        if r.ok:
            summary.done += 1
            summary.records += r.records
            summary.car_bytes += r.car_bytes
            summary.fetch_s += r.fetch_s
            summary.write_s += r.write_s
        else:
            summary.failures.append((r.did, r.reason or "unknown"))
    summary.failures.sort()
    summary.seconds = time.monotonic() - started
    return summary
