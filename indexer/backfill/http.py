"""A polite HTTP client for fetching from many PDS hosts and a relay.

Politeness rules, per host and overall:
- at most `per_host` requests in flight to one host and `concurrency` in total;
- HTTP 429 pauses the whole host for `Retry-After` (seconds or an HTTP date) or until
  `RateLimit-Reset` (atproto PDSes send a unix time); `RateLimit-Remaining: 0` on a success
  pauses it too, before the next request rather than after a refusal;
- transient failures (connection errors, timeouts, 5xx, 429, a body cut short) are retried with
  exponential backoff and jitter; anything else fails at once with a reason a person can read
  (the XRPC error name and message when the server sent one).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson

from core.backoff import backoff_delay
from core.net import guard_refusal

log = logging.getLogger("plyr.backfill")

T = TypeVar("T")


class FetchError(Exception):
    """A request that failed; `transient` says whether trying again later may help."""

    def __init__(
        self, reason: str, *, transient: bool, status: int | None = None, error: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.status = status
        self.error = error  # the XRPC error name, e.g. RepoNotFound


@dataclass(frozen=True)
class Politeness:
    concurrency: int = 8
    per_host: int = 2
    retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # between two reads of a body
    request_timeout: float = 60.0  # whole JSON requests
    max_wait: float = 600.0  # longest rate-limit pause we accept before giving up on a request


class _Host:
    __slots__ = ("sem", "not_before")

    def __init__(self, limit: int) -> None:
        self.sem = asyncio.Semaphore(limit)
        self.not_before = 0.0


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now_wall)


def rate_limit_wait(headers: Mapping[str, str], now_wall: float, *, refused: bool) -> float | None:
    """How long the host asks us to wait, from Retry-After / RateLimit-* headers (None: no ask)."""
    retry_after = parse_retry_after(headers.get("Retry-After"), now_wall)
    if retry_after is not None:
        return retry_after
    remaining = headers.get("RateLimit-Remaining")
    reset = headers.get("RateLimit-Reset")
    if reset is None or (not refused and remaining not in ("0", "0.0")):
        return None
    try:
        reset_value = float(reset)
    except ValueError:
        return None
    # RateLimit-Reset is a unix time on atproto PDSes; the IETF draft says delta seconds. A value
    # far above "now in seconds" minus a year cannot be a delta.
    if reset_value > 1_000_000_000:
        return max(0.0, reset_value - now_wall)
    return max(0.0, reset_value)


def _xrpc_error(body: bytes) -> tuple[str | None, str | None]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    error = obj.get("error") if isinstance(obj.get("error"), str) else None
    message = obj.get("message") if isinstance(obj.get("message"), str) else None
    return error, message


class PoliteClient:
    """GETs with per-host and global limits, rate-limit pauses and retries."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        politeness: Politeness | None = None,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.rules = politeness or Politeness()
        self._global = asyncio.Semaphore(self.rules.concurrency)
        self._hosts: dict[str, _Host] = {}
        self._sleep = sleep
        self._clock = clock
        self._wall = wall
        self.rate_limited = 0  # 429s seen (for the summary)
        self.retried = 0

    def _host(self, url: str) -> _Host:
        netloc = urlsplit(url).netloc.lower()
        host = self._hosts.get(netloc)
        if host is None:
            host = self._hosts[netloc] = _Host(self.rules.per_host)
        return host

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, base=self.rules.backoff_base, cap=self.rules.backoff_max, jitter="half")

    def _pause(self, host: _Host, seconds: float) -> None:
        host.not_before = max(host.not_before, self._clock() + seconds)

    async def call(
        self,
        url: str,
        params: Mapping[str, Any] | None,
        handle: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        *,
        accept: tuple[str, ...] = ("application/json",),
        what: str = "request",
    ) -> T:
        """GET `url` and run `handle(response)` on a 200 answer of an accepted content type.

        Transport failures inside `handle` (a body cut short, a read timeout) are retried like
        failed requests; other exceptions from `handle` propagate.
        """
        host = self._host(url)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.rules.connect_timeout, sock_connect=self.rules.connect_timeout,
            sock_read=self.rules.read_timeout,
        )  # fmt: skip
        attempt = 0
        while True:
            wait_hint: float | None = None
            try:
                async with self._global, host.sem:
                    delay = host.not_before - self._clock()
                    if delay > 0:
                        if delay > self.rules.max_wait:
                            raise FetchError(
                                f"{what}: rate limited for {delay:.0f} s more",
                                transient=True,
                                status=429,
                            )
                        await self._sleep(delay)
                    return await self._once(url, params, handle, accept, timeout, host, what)
            except FetchError as exc:
                if not exc.transient or attempt >= self.rules.retries:
                    raise
                if exc.status == 429:
                    wait_hint = max(0.0, host.not_before - self._clock())
                err = exc
            attempt += 1
            self.retried += 1
            delay = max(wait_hint or 0.0, self._backoff(attempt - 1))
            if delay > self.rules.max_wait:
                raise err
            log.info(
                "retrying",
                extra={
                    "url": url,
                    "attempt": attempt,
                    "delay_s": round(delay, 2),
                    "reason": err.reason,
                },
            )
            await self._sleep(delay)

    async def _once(
        self,
        url: str,
        params: Mapping[str, Any] | None,
        handle: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        accept: tuple[str, ...],
        client_timeout: aiohttp.ClientTimeout,
        host: _Host,
        what: str,
    ) -> T:
        try:
            async with self.session.get(
                url, params=params, timeout=client_timeout, allow_redirects=False
            ) as resp:
                status = resp.status
                if status == 429:
                    self.rate_limited += 1
                    wait = rate_limit_wait(resp.headers, self._wall(), refused=True)
                    self._pause(host, wait if wait is not None else self._backoff(0))
                    raise FetchError(f"{what}: rate limited (HTTP 429)", transient=True, status=429)
                if status >= 500:
                    raise FetchError(
                        f"{what}: HTTP {status} from {_origin(url)}", transient=True, status=status
                    )
                if status != 200:
                    body = await resp.content.read(16_384)
                    error, message = _xrpc_error(body)
                    detail = f" {error}" if error else ""
                    detail += f": {message[:200]}" if message else ""
                    raise FetchError(
                        f"{what}: HTTP {status}{detail} from {_origin(url)}",
                        transient=status in (408, 425), status=status, error=error,
                    )  # fmt: skip
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not any(ctype == a for a in accept):
                    raise FetchError(
                        f"{what}: {_origin(url)} answered {ctype or 'no content type'}, expected {accept[0]}",
                        transient=False, status=status,
                    )  # fmt: skip
                wait = rate_limit_wait(resp.headers, self._wall(), refused=False)
                if wait is not None:
                    self._pause(host, min(wait, self.rules.max_wait))
                return await handle(resp)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise FetchError(
                f"{what}: response cut short ({exc.__class__.__name__})", transient=True
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            refused = guard_refusal(exc)
            if refused is not None:  # a non-public address: retrying cannot help
                raise FetchError(f"{what}: {refused.strerror}", transient=False) from exc
            raise FetchError(
                f"{what}: cannot reach {_origin(url)} ({exc})", transient=True
            ) from exc
        except TimeoutError as exc:
            raise FetchError(
                f"{what}: timed out talking to {_origin(url)}", transient=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise FetchError(f"{what}: {exc.__class__.__name__}: {exc}", transient=True) from exc

    async def get_json(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        *,
        what: str = "request",
        limit: int = 16 * 1024 * 1024,
    ) -> Any:
        async def _read(resp: aiohttp.ClientResponse) -> Any:
            body = await resp.content.read(limit + 1)
            if len(body) > limit:
                raise FetchError(f"{what}: answer larger than {limit} bytes", transient=False)
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise FetchError(f"{what}: answer is not valid JSON", transient=False) from exc

        async with asyncio.timeout(
            self.rules.request_timeout * (self.rules.retries + 1) + self.rules.max_wait
        ):
            return await self.call(url, params, _read, what=what)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def xrpc_url(base: str, method: str) -> str:
    return base.rstrip("/") + "/xrpc/" + method
