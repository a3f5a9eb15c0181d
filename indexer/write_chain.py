"""Writes in stream order: each one starts after the one scheduled before it has committed,
at most one is in flight, and after a failed write no later one runs (it would move the cursor
past the lost one; the restart resumes from the stored cursor instead)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class WriteChain:
    def __init__(self) -> None:
        self.last: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None

    def in_flight(self) -> bool:
        return self.last is not None and not self.last.done()

    def schedule(self, write: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `write` after every write scheduled before it."""
        previous = self.last

        async def after() -> None:
            if previous is not None:
                try:
                    await previous
                except BaseException:
                    write.close()
                    raise
            await write

        task = asyncio.create_task(after())
        self.last = task
        return task

    async def run(self, write: Coroutine[Any, Any, None]) -> None:
        """Schedule `write` and wait for it (and so for every write before it)."""
        await self.schedule(write)

    async def wait(self) -> None:
        """Wait for every write scheduled so far; a failed one raises."""
        if self.last is not None:
            await self.last

    def raise_if_failed(self) -> None:
        """Re-raise the error of a finished write that failed."""
        if self.last is not None and self.last.done():
            self.last.result()

    def check(self) -> None:
        """Called by a write before it starts: refuse when an earlier write failed."""
        if self.failed is not None:
            raise RuntimeError("an earlier batch write failed") from self.failed
