"""A small in-process TTL cache with single-flight loading (one load per key at a time) and,
optionally, stale-while-revalidate: an expired value is still served for `stale_for` seconds
while one background task loads the new one, so no request waits on a slow aggregate.
`coalesce` is the single flight alone (identical concurrent requests share one load)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("plyr.appview")


class TtlCache:
    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._values: dict[Any, tuple[float, Any]] = {}
        self._loading: dict[Any, asyncio.Future[Any]] = {}
        self._refreshing: dict[Any, asyncio.Task[Any]] = {}

    async def get(
        self, key: Any, ttl: float, load: Callable[[], Awaitable[Any]], *, stale_for: float = 0
    ) -> Any:
        if ttl <= 0:
            return await load()
        hit = self._values.get(key)
        now = time.monotonic()
        if hit is not None:
            if hit[0] > now:
                return hit[1]
            if stale_for > 0 and hit[0] + stale_for > now:
                if key not in self._loading and key not in self._refreshing:
                    task = asyncio.create_task(self._refresh(key, ttl, load))
                    self._refreshing[key] = task
                    task.add_done_callback(lambda _t: self._refreshing.pop(key, None))
                return hit[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        return await self._load(key, ttl, load)

    async def coalesce(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        """Single flight without reuse: a caller arriving while a load of `key` is running gets
        that load's result; otherwise it starts its own. Nothing is kept afterwards."""
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        return await self._load(key, 0, load, keep=False)

    async def _refresh(self, key: Any, ttl: float, load: Callable[[], Awaitable[Any]]) -> None:
        with contextlib.suppress(Exception):  # the stale value stays; the next expiry retries
            await self._load(key, ttl, load)

    async def _load(self, key: Any, ttl: float, load: Callable[[], Awaitable[Any]], *, keep: bool = True) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(value)
        if not keep:
            return value
        if len(self._values) >= self.max_entries:
            self._values.clear()
        self._values[key] = (time.monotonic() + ttl, value)
        return value
