"""How fresh the index is, for a header on every XRPC response.

The indexer writes its stream position (and the event time at that position) to `cursors` in
the same transaction as the rows. A background task re-reads it every `interval` seconds, so a
request pays nothing; the header gives the newest event time and the lag behind the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

import asyncpg

log = logging.getLogger("plyr.appview")

EVENT_TIME_HEADER = "Plyr-Index-Event-Time"
LAG_HEADER = "Plyr-Index-Lag"


class Freshness:
    def __init__(self, pool: asyncpg.Pool, interval: float = 1.0) -> None:
        self.pool = pool
        self.interval = max(interval, 0.05)
        self.event_time: datetime | None = None
        self._event_epoch: float | None = None
        self._event_text = "none"
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        # The newest event time over every stream (live relay, Jetstream, backfill...).
        value = await self.pool.fetchval("SELECT max(event_time) FROM cursors")
        self.event_time = value
        if value is None:
            self._event_epoch = None
            self._event_text = "none"
        else:
            self._event_epoch = value.timestamp()
            self._event_text = value.isoformat().replace("+00:00", "Z")

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                # Whatever the database throws (a dead connection surfaces as asyncpg's
                # InterfaceError or InternalClientError too), the loop lives on: the header
                # just stays at its last value until a read succeeds.
                log.warning("could not read index freshness", extra={"error": str(exc)[:300]})
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        with contextlib.suppress(Exception):  # the loop retries; a start never fails on it
            await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="appview-freshness")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def headers(self) -> dict[str, str]:
        """The freshness headers: the event time and the lag in seconds ("unknown" when empty)."""
        if self._event_epoch is None:
            return {EVENT_TIME_HEADER: "none", LAG_HEADER: "unknown"}
        lag = max(0.0, time.time() - self._event_epoch)
        return {EVENT_TIME_HEADER: self._event_text, LAG_HEADER: f"{lag:.3f}"}
