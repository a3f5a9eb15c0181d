"""Request rate limits per client IP and per authenticated DID, shared by every process of a
service through Postgres, with no database round trip on a request's path.

Windows are fixed (`window_seconds`, aligned on the epoch, so every process agrees which window
a request falls in). A process decides alone, from what it knows: the window's total as of its
last sync (every process's hits) plus the hits it admitted since. Every `sync_seconds` (sooner,
at most ten times as often, when a key spends a tenth of its limit locally) one statement adds
this process's new hits to `rate_limits` (UNLOGGED, one row per key and window) and reads back
the totals of those keys.

Accuracy, the price of keeping Postgres off the hot path: a process cannot see what the others
admitted since their last sync, so a key can get more than its limit in a window by what the
other processes admit for it in one sync interval (at worst N x limit for a burst that fits in
one interval, N processes); never less than its limit. And, as with any fixed window, a client
can spend a whole budget at the end of one window and another at the start of the next. When
the database is unavailable each process goes on limiting alone (never refusing for that).

Who pays: a request with a token that verifies is charged to its DID (a PDS proxying for many
users is one IP; its users are not one budget); every other request to its client IP, the one
with a token that failed included. A request carrying a token is refused up front only if its
IP is already over. Loopback clients are not limited unless PLYR_RATE_LIMIT_LOOPBACK is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from core.settings import Address, Network, RateLimitSettings

log = logging.getLogger("plyr.ratelimit")

# Paths never limited: probes, scrapes and our DID document (a PDS resolving us).
EXEMPT_PREFIXES = ("/health", "/metrics", "/.well-known/")
PRUNE_EVERY = 60.0  # seconds between deletes of ended windows (per process with traffic)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int   # epoch seconds: when the window ends
    window: int

    def headers(self, now: float) -> dict[str, str]:
        """The headers the atproto PDS sends (RateLimit-* of the IETF draft, Reset as epoch
        seconds), and Retry-After in seconds on a refusal."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_at),
            "RateLimit-Policy": f"{self.limit};w={self.window}",
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_at - now)))
        return headers


def tightest(verdicts: list[Verdict]) -> Verdict | None:
    """A refusal if any, else the budget with the fewest requests left."""
    refused = [v for v in verdicts if not v.allowed]
    if refused:
        return max(refused, key=lambda v: v.reset_at)
    return min(verdicts, key=lambda v: v.remaining, default=None)


_SYNC_SQL = """
WITH added AS (
    INSERT INTO rate_limits AS r (key, window_start, window_end, hits)
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[]) AS u(key, s, e, n)
    ORDER BY 1, 2
    ON CONFLICT (key, window_start) DO UPDATE SET hits = r.hits + excluded.hits
    RETURNING key, window_start, hits
)
SELECT key, window_start, hits FROM added
UNION ALL
SELECT r.key, r.window_start, r.hits
FROM unnest($5::text[], $6::bigint[]) AS w(key, s)
JOIN rate_limits r ON r.key = w.key AND r.window_start = w.s
"""
# ORDER BY: every process locks rows in one order, so two overlapping batches cannot deadlock.
# The second part re-reads keys near their limit that this process did not hit since its last
# sync: what the others spent reaches it even when it has nothing to add.


class SharedCounter:
    """Hits per (key, window) in this process, met with the other processes' in Postgres."""

    def __init__(
        self,
        pool: Any,
        window_seconds: int,
        *,
        sync_seconds: float = 0.5,
        clock: Callable[[], float] = time.time,
        max_keys: int = 200_000,
    ) -> None:
        self.pool = pool
        self.window = window_seconds
        self.sync_seconds = sync_seconds
        self.clock = clock
        self.max_keys = max_keys
        self.syncs = 0  # completed syncs (tests wait on this)
        self._known: dict[tuple[str, int], int] = {}    # window totals as of the last sync
        self._pending: dict[tuple[str, int], int] = {}  # admitted here since
        self._sending: dict[tuple[str, int], int] = {}  # being added by the sync under way
        self._hot: set[tuple[str, int]] = set()         # at half their limit or more: re-read
        self._wake = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = clock()

    def take(self, key: str, limit: int, *, consume: bool = True) -> Verdict:
        """Spend one request of `key`'s budget (or only look, `consume=False`)."""
        start = int(self.clock() // self.window) * self.window
        slot = (key, start)
        pending = self._pending.get(slot, 0)
        used = self._known.get(slot, 0) + self._sending.get(slot, 0) + pending
        if used >= limit:
            return Verdict(False, limit, 0, start + self.window, self.window)
        if consume:
            self._pending[slot] = pending + 1
            used += 1
            if (pending + 1) * 10 >= limit:
                self._wake.set()  # spending fast: let the others know sooner
        if used * 2 >= limit:
            self._hot.add(slot)
        return Verdict(True, limit, limit - used, start + self.window, self.window)

    async def sync(self) -> None:
        """Add this process's new hits to the shared counts and learn those keys' totals (and
        those of the keys near their limit). One at a time: when it returns, every hit taken
        before the call has been added."""
        async with self._sync_lock:
            await self._sync()

    async def _sync(self) -> None:
        now = self.clock()
        current = int(now // self.window) * self.window
        self._hot = {slot for slot in self._hot if slot[1] >= current}
        # Still counted while on the way (`_sending`), until the totals that include them arrive.
        batch, self._pending = self._pending, {}
        self._sending = batch
        watched = sorted(self._hot.difference(batch))
        if batch or watched:
            slots = sorted(batch)
            try:
                rows = await self.pool.fetch(
                    _SYNC_SQL,
                    [k for k, _s in slots],
                    [s for _k, s in slots],
                    [s + self.window for _k, s in slots],
                    [batch[slot] for slot in slots],
                    [k for k, _s in watched],
                    [s for _k, s in watched],
                )
            except BaseException:
                for slot, n in batch.items():  # not lost: sent with the next sync
                    self._pending[slot] = self._pending.get(slot, 0) + n
                raise
            finally:
                self._sending = {}
            if len(self._known) > self.max_keys:
                self._known.clear()  # bounded memory; forgetting only ever admits more
            for row in rows:
                slot = (row["key"], row["window_start"])
                self._known[slot] = max(self._known.get(slot, 0), row["hits"])
        for slot in [s for s in self._known if s[1] < current]:
            del self._known[slot]
        if batch and now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            await self.pool.execute("DELETE FROM rate_limits WHERE window_end < $1", int(now) - 1)
        self.syncs += 1

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sync_seconds)
            self._wake.clear()
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("rate limit sync failed; limiting per process meanwhile",
                            extra={"error": str(exc)[:300]})
            await asyncio.sleep(self.sync_seconds / 10)  # however hot, at most 10x as often

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pending:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sync(), 2.0)  # the last hits still count elsewhere


def client_address(request: web.Request, trusted: tuple[Network, ...]) -> Address | None:
    """The peer's address; when the peer is a trusted proxy, the nearest address in
    X-Forwarded-For (from the right) that is not one of ours. None when unknown (unix socket)."""
    peer = _address(request.remote)
    if peer is None or not trusted or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for value in request.headers.getall("X-Forwarded-For", []) for h in value.split(",")]
    current = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage written by whoever is beyond: stop at the last hop we can vouch for
        current = address
        if not _trusted(address, trusted):
            break
    return current


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, trusted: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def address_key(address: Address) -> str:
    # An IPv6 client gets a whole /64 from its provider: one budget, not 2^64.
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


@dataclass
class _Spend:
    limits: RequestLimits
    ip_key: str
    deferred: bool              # the IP is charged after the fact unless a DID pays
    settled: bool = False       # a DID paid, or the caller is exempt
    verdicts: list[Verdict] = field(default_factory=list)


_SPEND_KEY = web.RequestKey("plyr.ratelimit", _Spend)


class RequestLimits:
    """The aiohttp side: a middleware that charges requests, headers on every response."""

    def __init__(
        self,
        settings: RateLimitSettings,
        pool: Any,
        scope: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.scope = scope  # budgets are per service: "appview", "media"
        self.clock = clock
        self._keys: dict[str, str | None] = {}  # peer address -> budget key
        self.counter = (
            SharedCounter(pool, settings.window_seconds, sync_seconds=settings.sync_seconds, clock=clock)
            if settings.enabled else None
        )

    def install(self, app: web.Application) -> None:
        """Headers at prepare time (streamed and file responses too) and the sync loop. The
        middleware goes in the app's list: `middlewares=[..., limits.middleware, errors]`."""
        app.on_response_prepare.append(self._on_prepare)

        async def start(_app: web.Application) -> None:
            if self.counter is not None:
                self.counter.start()

        async def stop(_app: web.Application) -> None:
            if self.counter is not None:
                await self.counter.close()

        app.on_startup.append(start)
        app.on_cleanup.append(stop)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        counter = self.counter
        if counter is None or request.method == "OPTIONS" or request.path.startswith(EXEMPT_PREFIXES):
            return await handler(request)
        ip_key = self._ip_key(request)
        if ip_key is None:
            return await handler(request)
        has_token = "Authorization" in request.headers
        verdict = counter.take(ip_key, self.settings.ip_limit, consume=not has_token)
        spend = _Spend(self, ip_key, deferred=has_token, verdicts=[verdict])
        request[_SPEND_KEY] = spend
        if not verdict.allowed:
            return refusal(verdict, "client address")
        try:
            return await handler(request)
        finally:
            if spend.deferred and not spend.settled:
                # The token did not verify (or was never looked at): the address pays.
                after = counter.take(ip_key, self.settings.ip_limit)
                spend.verdicts.append(dataclasses.replace(after, allowed=True))

    def _ip_key(self, request: web.Request) -> str | None:
        """The address's budget key; None when not limited (loopback, unknown peer)."""
        trusted = self.settings.trusted_proxies
        peer = request.remote or ""
        # Parsing an address costs more than the rest of the check: remember each peer's key
        # (only without trusted proxies: then the key depends on the request's headers).
        if not trusted and peer in self._keys:
            return self._keys[peer]
        address = client_address(request, trusted)
        key = None
        if address is not None and not (address.is_loopback and not self.settings.loopback):
            key = f"{self.scope}:ip:{address_key(address)}"
        if not trusted:
            if len(self._keys) >= 10_000:
                self._keys.clear()
            self._keys[peer] = key
        return key

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        spend: _Spend | None = request.get(_SPEND_KEY)
        if spend is not None and (verdict := tightest(spend.verdicts)) is not None:
            response.headers.update(verdict.headers(self.clock()))


def refusal(verdict: Verdict, who: str) -> web.Response:
    """429 RateLimitExceeded (its RateLimit-* and Retry-After headers are added at prepare)."""
    message = (f"rate limit exceeded: {verdict.limit} requests per {verdict.window} s per {who}; "
               f"the window ends at {verdict.reset_at} (epoch seconds)")
    return web.Response(status=429, body=orjson.dumps({"error": "RateLimitExceeded", "message": message}),
                        content_type="application/json")


def charge_did(request: web.Request, did: str) -> Verdict | None:
    """Charge a verified caller's request to its DID instead of its address; None when the
    request is not limited (limits off, loopback, exempt path). A refusal is the caller's to
    raise (each service has its own error type)."""
    spend: _Spend | None = request.get(_SPEND_KEY)
    if spend is None or spend.limits.counter is None:
        return None
    spend.settled = True
    verdict = spend.limits.counter.take(f"{spend.limits.scope}:did:{did}", spend.limits.settings.did_limit)
    if spend.deferred:
        spend.verdicts.clear()  # the address was only looked at: its budget is not this request's
    spend.verdicts.append(verdict)
    return verdict


def exempt(request: web.Request) -> None:
    """A trusted caller (a server key): charged to no budget, no headers."""
    spend: _Spend | None = request.get(_SPEND_KEY)
    if spend is not None:
        spend.settled = True
        spend.verdicts.clear()


async def forget_did(conn: Any, did: str) -> int:
    """Delete the stored counts charged to `did` (every service's `<scope>:did:<did>` keys), in
    the caller's transaction; returns how many rows. Account data erasure (appview/erasure.py)
    calls it; a process still holding hits of the DID adds them back at its next sync, for at
    most one window (the erasure request itself is such a hit)."""
    status: str = await conn.execute(
        "DELETE FROM rate_limits WHERE right(key, length($1) + 5) = ':did:' || $1", did
    )
    return int(status.split()[-1])
