"""Verified handles of indexed actors, looked up in the background and never lost.

A handle lookup is network work (the DID document, then DNS TXT or HTTPS well-known, both
ways), so it never runs in the write path. Instead a check is *requested* in the database:
every new actor row wants one (column default), and the live consumer requests one, in the same
transaction as its cursor, for each `#identity` event of an indexed actor (`request_checks`).
`HandleChecker` then works through the actors whose check is due, at most `concurrency` lookups
at a time, woken by the consumer after such batches and every `interval_s` anyway. So an actor
written by a backfill gets its handle too, and a crash between a batch and its lookups only
delays them.

Columns (migrations/0003_actor_handle_checks.sql): a check is pending while
`handle_check_wanted > handle_check_done`; a lookup records the `wanted` value it started from,
so a request that arrives during the lookup keeps the check pending. Hidden (inactive) actors
wait until they are visible again. A lookup that fails (the
PLC or the network) is retried with backoff, 1 minute doubling to 6 hours; after
MAX_FAILURES the actor is left as it is until its next `#identity` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import Counter

from core.db import Connection

if TYPE_CHECKING:  # importing identity would pull in aiohttp
    from protocol.identity import IdentityResolving

log = logging.getLogger("plyr.indexer.handles")

MAX_FAILURES = 10

CHECKS = Counter("plyr_indexer_handle_checks_total", "Handle lookups of indexed actors", ["outcome"])

_REQUEST = """
UPDATE actors SET handle_check_wanted = handle_check_wanted + 1, handle_check_after = '-infinity',
                  handle_check_failures = 0
WHERE did = ANY($1::text[])
"""

_DUE = """
SELECT did, handle_check_wanted FROM actors
WHERE handle_check_wanted > handle_check_done AND handle_check_after <= now() AND visible
ORDER BY handle_check_after, did
LIMIT $1
"""

_DONE = """
UPDATE actors SET
    handle = $2,
    handle_check_done = greatest(handle_check_done, $3),
    handle_check_failures = 0,
    updated_at = CASE WHEN handle IS DISTINCT FROM $2 THEN now() ELSE updated_at END
WHERE did = $1
"""

_FAILED = """
UPDATE actors SET
    handle_check_failures = handle_check_failures + 1,
    handle_check_after = now() + make_interval(secs => least(60 * 2 ^ handle_check_failures, 21600)),
    handle_check_done = CASE WHEN handle_check_failures + 1 >= $3
                             THEN greatest(handle_check_done, $2) ELSE handle_check_done END
WHERE did = $1
"""


async def request_checks(conn: Connection, dids: Collection[str]) -> None:
    """Ask for a fresh handle check of these actors (inside the caller's transaction)."""
    if dids:
        await conn.execute(_REQUEST, list(dids))


class HandleChecker:
    """Runs the due handle checks; `poke()` to run a pass soon, `wait_idle()` to drain."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        resolver: IdentityResolving,
        *,
        concurrency: int = 8,
        page: int = 200,
        interval_s: float = 60.0,
    ) -> None:
        self.pool = pool
        self.resolver = resolver
        self.concurrency = concurrency
        self.page = page
        self.interval_s = interval_s
        self._slots = asyncio.Semaphore(concurrency)
        self._again = False
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Check what is due now (requests left by an earlier run), then every interval_s."""
        self.poke()
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="handle-checks-timer")

    def poke(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True  # one more pass after the running one: no request waits long
            return
        self._task = asyncio.create_task(self._passes(), name="handle-checks")

    async def wait_idle(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)

    async def close(self) -> None:
        for task in (self._ticker, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._ticker = self._task = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.poke()

    async def _passes(self) -> None:
        while True:
            self._again = False
            try:
                checked = await self.run_once()
            except Exception:  # noqa: BLE001 - the database may be away; the timer retries
                log.exception("handle checks failed")
                return
            if not self._again and checked < self.page:
                return

    async def run_once(self) -> int:
        """One page of due checks; returns how many actors were looked up."""
        due = await self.pool.fetch(_DUE, self.page)
        await asyncio.gather(*(self._check(r["did"], r["handle_check_wanted"]) for r in due))
        return len(due)

    async def _check(self, did: str, wanted: int) -> None:
        async with self._slots:
            try:
                self.resolver.invalidate(did)
                handle = await self.resolver.verified_handle(did)
            except Exception as exc:  # noqa: BLE001 - any lookup failure is retried later
                CHECKS.labels("failed").inc()
                log.info("handle lookup failed", extra={"did": did, "error": str(exc)})
                await self.pool.execute(_FAILED, did, wanted, MAX_FAILURES)
                return
            CHECKS.labels("verified" if handle else "none").inc()
            await self.pool.execute(_DONE, did, handle, wanted)
