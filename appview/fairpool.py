"""A first-come, first-served front for the AppView's asyncpg pool.

asyncpg's pool hands a released connection to whichever task asks next, and a waiter it woke
that finds the connection taken goes to the back of the line (asyncio.Queue). With many more
requests than connections, a few requests then wait for hundreds of milliseconds while others
pass them (measured: p50 4 ms, p99 900 ms). Here a finished statement hands its slot directly
to the longest waiter, so the wait is the queue's length, for everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from core.db import Connection


class FairGate:
    """A counting semaphore whose releases hand the slot to the oldest waiter (no barging)."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, *, first: bool = False) -> None:
        """Wait for a slot; `first` joins the line at its head (work many requests wait on)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if first:
            self._waiters.appendleft(future)
        else:
            self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed to us just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)  # the slot goes straight to this waiter
                return
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        self.release()


class FairPool:
    """The pool's query methods and `acquire`, each behind a FairGate. The gate is a little
    wider than the pool (`slots`): a connection freed finds the next statement already waiting
    on it, instead of idling until a woken task runs; the overtaking among those few is bounded."""

    def __init__(self, pool: asyncpg.Pool, slots: int) -> None:
        self._pool = pool
        self._gate = FairGate(slots)

    async def fetch_first(self, query: str, *args: Any, **kw: Any) -> list[asyncpg.Record]:
        """`fetch` at the head of the line: for batched work that many requests wait on."""
        await self._gate.acquire(first=True)
        try:
            return await self._pool.fetch(query, *args, **kw)
        finally:
            self._gate.release()

    async def fetch(self, query: str, *args: Any, **kw: Any) -> list[asyncpg.Record]:
        async with self._gate:
            return await self._pool.fetch(query, *args, **kw)

    async def fetchrow(self, query: str, *args: Any, **kw: Any) -> asyncpg.Record | None:
        async with self._gate:
            return await self._pool.fetchrow(query, *args, **kw)

    async def fetchval(self, query: str, *args: Any, **kw: Any) -> Any:
        async with self._gate:
            return await self._pool.fetchval(query, *args, **kw)

    async def execute(self, query: str, *args: Any, **kw: Any) -> str:
        async with self._gate:
            return await self._pool.execute(query, *args, **kw)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        async with self._gate, self._pool.acquire() as conn:
            yield conn

    async def close(self) -> None:
        await self._pool.close()
