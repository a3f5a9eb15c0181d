"""High availability: one active consumer per stream, the others wait as standbys.

The active indexer holds a session-level Postgres advisory lock on a dedicated connection.
A standby polls `pg_try_advisory_lock` and takes over as soon as the holder's session ends
(process killed, connection lost). The holder watches its lock connection: if that connection
dies, the lock is gone (a standby may already be consuming), so the consumer is cancelled at
once. The cursor fence in the writer (`CursorUpdate.expected`) covers the short window
before the watchdog notices.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from core import db
from indexer import metrics

log = logging.getLogger("plyr.indexer")

T = TypeVar("T")

# classid of the stream locks (two-int advisory lock space); "plyi".
STREAM_LOCK_CLASS = 0x706C7969


class LeadershipLost(Exception):
    """The lock connection died while consuming."""


def stream_lock_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big", signed=True)


async def run_as_leader(
    database_url: str,
    name: str,
    work: Callable[[], Awaitable[T]],
    *,
    poll: float = 1.0,
    check: float = 1.0,
    on_connection: Callable[[asyncpg.Connection], None] | None = None,
) -> T:
    """Wait for the stream lock of `name`, then run `work()` while holding it.

    Raises LeadershipLost (and cancels `work`) if the lock connection fails.
    `on_connection` receives the lock connection (tests use it to kill it).
    """
    conn = await db.connect(database_url)
    if on_connection is not None:
        on_connection(conn)
    key = stream_lock_key(name)
    try:
        announced = False
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", STREAM_LOCK_CLASS, key):
            if not announced:
                log.info("standby: another indexer holds the stream lock", extra={"stream": name})
                announced = True
            await asyncio.sleep(poll)
        log.info("took the stream lock: consuming", extra={"stream": name})
        metrics.LEADER.labels(name).set(1)
        work_task = asyncio.ensure_future(work())
        watch_task = asyncio.create_task(_watch(conn, check))
        try:
            done, _ = await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
            if work_task in done:
                return work_task.result()
            work_task.cancel()
            await asyncio.gather(work_task, return_exceptions=True)
            raise LeadershipLost(f"lost the lock connection of stream {name}: {watch_task.exception()}")
        finally:
            metrics.LEADER.labels(name).set(0)
            for task in (work_task, watch_task):
                task.cancel()
            await asyncio.gather(work_task, watch_task, return_exceptions=True)
    finally:
        if not conn.is_closed():
            try:
                async with asyncio.timeout(2):
                    await conn.close()
            except (TimeoutError, OSError, asyncpg.PostgresError):
                conn.terminate()


async def _watch(conn: asyncpg.Connection, every: float) -> None:
    """Return (with an exception) as soon as the lock connection stops answering."""
    while True:
        await asyncio.sleep(every)
        if conn.is_closed():
            raise LeadershipLost("lock connection closed")
        try:
            async with asyncio.timeout(max(every * 5, 5)):
                await conn.fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise LeadershipLost(f"lock connection failed: {exc!r}") from exc
