"""Remembering identity answers: a size-bounded TTL map, and one shared request per key.

A burst of events from one account must cost one fetch: answers are kept for a while, and
concurrent lookups of the same key wait on the same request instead of starting their own.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any


class CacheEntry:
    """An answer (or a remembered failure) with when it was fetched and when it expires."""

    __slots__ = ("value", "fetched_at", "expires_at")

    def __init__(self, value: Any, fetched_at: float, expires_at: float) -> None:
        self.value = value
        self.fetched_at = fetched_at
        self.expires_at = expires_at


class TtlCache:
    """A size-bounded map whose entries expire; oldest-inserted entries go first when full."""

    def __init__(self, max_entries: int) -> None:
        self._data: OrderedDict[str, CacheEntry] = OrderedDict()
        self._max = max_entries

    def get(self, key: str) -> CacheEntry | None:
        return self._data.get(key)

    def put(self, key: str, entry: CacheEntry) -> None:
        self._data[key] = entry
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def pop(self, key: str) -> None:
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


class Coalescer:
    """Runs one request per key at a time; every concurrent caller gets its result."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(make())
            self._inflight[key] = fut

            def _done(f: asyncio.Future[Any], key: str = key) -> None:
                if self._inflight.get(key) is f:
                    del self._inflight[key]
                if not f.cancelled():
                    f.exception()  # mark retrieved even if every caller went away

            fut.add_done_callback(_done)
        # shield: one caller being cancelled must not cancel the lookup the others wait on.
        return await asyncio.shield(fut)
