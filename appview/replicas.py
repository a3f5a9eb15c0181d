"""Where an AppView request reads: one of the streaming replicas, or the primary.

Each request is routed once, when it arrives, and every statement it runs goes to that one
server (a page and its hydration see one snapshot of one replay position, and the freshness
header describes it). The primary takes:
- writes (any method but GET/HEAD) and the routes that read a viewer's own private state;
- every read of a viewer who wrote within `read_your_writes_seconds` (read-your-writes);
- everything, when no replica is usable.
Replicas are taken in turn (round robin) among those usable: reachable, and no further behind
than `replica_max_lag`, checked in the background every `freshness_interval`. A read that fails
because its replica is unavailable marks it unusable and is answered again from the primary:
a replica's failure is never an error to the client.

Read-your-writes across worker processes: the process that handled a write NOTIFYs the
viewer's DID on the primary, and every process LISTENs and keeps {did: until} locally. Chosen
over comparing replay LSNs with the LSN of the viewer's write because that still needs the
write's LSN shared between processes, plus a query per read to learn a replica's position;
the notification costs nothing per read. Each process sets `until` by its own clock on receipt
(nothing to compare across clocks). While the LISTEN connection is down, every authenticated
reader goes to the primary, which is always correct.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from appview.freshness import Freshness
from core import db
from core.db import is_unavailable

log = logging.getLogger("plyr.appview.replicas")

WROTE_CHANNEL = "plyr_viewer_wrote"
_SAFE_METHODS = ("GET", "HEAD")
# Outstanding WAL not yet replayed: how long ago the newest replayed transaction committed.
# Nothing outstanding: caught up, whatever that timestamp says (an idle primary writes nothing).
_REPLAY_LAG_SQL = """
SELECT pg_is_in_recovery() AS standby,
       CASE WHEN pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn()
            THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
            ELSE 0 END AS replay_lag
"""


@dataclass(eq=False)
class Target:
    """A server requests read from: its pool and how fresh its copy of the index is."""

    name: str
    pool: Any  # an asyncpg.Pool, or appview.fairpool.FairPool in front of one
    freshness: Freshness
    usable: bool = True
    lag: float = 0.0


class RequestRoute:
    """The server one request reads from; switched to the primary if its replica fails."""

    __slots__ = ("target",)

    def __init__(self, target: Target) -> None:
        self.target = target


ROUTE_KEY = web.RequestKey("read_route", RequestRoute)
_ROUTE: ContextVar[RequestRoute | None] = ContextVar("plyr_read_route", default=None)


class RecentWriters:
    """Viewers who wrote within `window` seconds, as this process heard of it."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self.listening = False
        self._until: dict[str, float] = {}

    def note(self, did: str) -> None:
        now = self.clock()
        if len(self._until) > 10_000:  # forget the expired now and then: bounded memory
            self._until = {d: u for d, u in self._until.items() if u > now}
        self._until[did] = now + self.window

    def recent(self, did: str) -> bool:
        if not self.listening:
            return True  # we might have missed a notification: the primary is always right
        until = self._until.get(did)
        return until is not None and until > self.clock()


class ReadRouter:
    """The AppView's pool as handlers see it (fetch, fetchrow, fetchval, execute, acquire,
    fetch_first), sending each call to the server chosen for the current request."""

    def __init__(
        self,
        primary: Target,
        replicas: Sequence[Target],
        *,
        primary_url: str,
        max_lag: float,
        read_your_writes: float,
        check_interval: float,
        primary_only: Collection[str] = (),
    ) -> None:
        self.primary = primary
        self.replicas = list(replicas)
        self.primary_url = primary_url
        self.max_lag = max_lag
        self.check_interval = max(check_interval, 0.05)
        self.primary_only = frozenset(primary_only)
        self.writers = RecentWriters(read_your_writes)
        self._turn = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncpg.Connection | None = None

    # -- the pool interface ---------------------------------------------------------------

    def _pool(self) -> Any:
        route = _ROUTE.get()
        return self.primary.pool if route is None else route.target.pool

    async def fetch(self, query: str, *args: Any, **kw: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._pool().fetch(query, *args, **kw)
        return rows

    async def fetch_first(self, query: str, *args: Any, **kw: Any) -> list[asyncpg.Record]:
        pool = self._pool()
        rows: list[asyncpg.Record] = await getattr(pool, "fetch_first", pool.fetch)(query, *args, **kw)
        return rows

    async def fetchrow(self, query: str, *args: Any, **kw: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._pool().fetchrow(query, *args, **kw)
        return row

    async def fetchval(self, query: str, *args: Any, **kw: Any) -> Any:
        return await self._pool().fetchval(query, *args, **kw)

    async def execute(self, query: str, *args: Any, **kw: Any) -> str:
        status: str = await self._pool().execute(query, *args, **kw)
        return status

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[db.Connection]:
        async with self._pool().acquire() as conn:
            yield conn

    # -- routing --------------------------------------------------------------------------

    def choose(self, request: web.Request) -> Target:
        if request.method not in _SAFE_METHODS:
            return self.primary
        if request.path.startswith("/xrpc/") and request.match_info.get("nsid") in self.primary_only:
            return self.primary
        viewer = claimed_issuer(request)
        if viewer is not None and self.writers.recent(viewer):
            return self.primary
        usable = [r for r in self.replicas if r.usable]
        if not usable:
            return self.primary
        return usable[next(self._turn) % len(usable)]

    def target_of(self, request: web.Request) -> Target:
        """The server that answered `request` (the primary outside routed requests)."""
        route = request.get(ROUTE_KEY)
        return self.primary if route is None else route.target

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = RequestRoute(self.choose(request))
        request[ROUTE_KEY] = route
        token = _ROUTE.set(route)
        try:
            try:
                response = await handler(request)
            except Exception as exc:
                if route.target is self.primary or not (is_unavailable(exc) or recovery_conflict(exc)):
                    raise
                # Only reads ever go to a replica: answering again from the primary is safe.
                if is_unavailable(exc):
                    self._mark_down(route.target, exc)
                route.target = self.primary
                response = await handler(request)
        finally:
            _ROUTE.reset(token)
        if (
            request.method not in _SAFE_METHODS
            and request.match_info.get("nsid") in self.primary_only  # authenticated: the caller is verified
            and response.status < 300
        ):
            viewer = claimed_issuer(request)
            if viewer is not None:
                await self.announce_write(viewer)
        return response

    def _mark_down(self, target: Target, exc: BaseException) -> None:
        if target.usable:
            log.warning("replica unavailable; reading from the primary",
                        extra={"replica": target.name, "error": str(exc)[:300]})  # fmt: skip
        target.usable = False

    # -- read-your-writes -----------------------------------------------------------------

    async def announce_write(self, did: str) -> None:
        self.writers.note(did)  # this process at once; the others by notification
        try:
            await self.primary.pool.execute("SELECT pg_notify($1, $2)", WROTE_CHANNEL, did)
        except Exception as exc:  # the write itself is done; other workers fall back on lag bounds
            log.warning("could not announce a viewer's write", extra={"error": str(exc)[:300]})

    def _on_notify(self, _conn: db.Connection, _pid: int, _channel: str, payload: object) -> None:
        if isinstance(payload, str):
            self.writers.note(payload)

    async def _listen(self) -> None:
        while True:
            try:
                conn = await db.connect(self.primary_url)
                try:
                    await conn.add_listener(WROTE_CHANNEL, self._on_notify)
                    self._listener = conn
                    self.writers.listening = True
                    while not conn.is_closed():
                        await asyncio.sleep(self.check_interval)
                        await conn.execute("SELECT 1")  # notices a dead connection
                finally:
                    self.writers.listening = False
                    self._listener = None
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("read-your-writes listener down; viewers read from the primary",
                            extra={"error": str(exc)[:300]})  # fmt: skip
            await asyncio.sleep(self.check_interval)

    # -- replica health -------------------------------------------------------------------

    async def check(self, replica: Target) -> None:
        """Re-read the replica's freshness and lag; usable when reachable and within the bound.
        Lag is the larger of: its cursor behind the primary's, and its unreplayed WAL's age."""
        try:
            # A replica that stops answering is as unusable as one that refuses.
            async with asyncio.timeout(max(2.0, 4 * self.check_interval)):
                await replica.freshness.refresh()
                row = await replica.pool.fetchrow(_REPLAY_LAG_SQL)
        except Exception as exc:
            self._mark_down(replica, exc)
            return
        assert row is not None
        behind = 0.0
        ours, theirs = self.primary.freshness.event_time, replica.freshness.event_time
        if ours is not None and (theirs is None or theirs < ours):
            behind = (ours - theirs).total_seconds() if theirs is not None else float("inf")
        replica.lag = max(behind, row["replay_lag"] or 0.0)
        usable = replica.lag <= self.max_lag
        if usable != replica.usable:
            log.info("replica %s", "back in use" if usable else "too far behind",
                     extra={"replica": replica.name, "lag": round(replica.lag, 3)})  # fmt: skip
        replica.usable = usable

    async def _check_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # freshness keeps its last value on failure
                await self.primary.freshness.refresh()
            await asyncio.gather(*(self.check(r) for r in self.replicas))
            await asyncio.sleep(self.check_interval)

    async def start(self) -> None:
        if not self.replicas:
            await self.primary.freshness.start()
            return
        with contextlib.suppress(Exception):
            await self.primary.freshness.refresh()
        await asyncio.gather(*(self.check(r) for r in self.replicas))
        self._tasks = [
            asyncio.create_task(self._check_loop(), name="appview-replica-check"),
            asyncio.create_task(self._listen(), name="appview-wrote-listener"),
        ]

    async def stop(self) -> None:
        await self.primary.freshness.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []


def recovery_conflict(exc: BaseException) -> bool:
    """A standby cancelled the statement because replay needed what it was reading (SQLSTATE
    40001; hot_standby_feedback makes it rare, not impossible): the replica is fine, this one
    read is answered by the primary."""
    return isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", "") == "40001"


def claimed_issuer(request: web.Request) -> str | None:
    """The `iss` a bearer token claims, unverified: for routing only (a false claim can only
    send a request to the primary; the endpoint still verifies the token)."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    parts = header[7:].split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None
