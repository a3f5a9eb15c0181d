"""core.ratelimit without a database: who a client is, the headers, and how local counts and
synced totals decide (the shared table is exercised in tests/integration/appview)."""

from __future__ import annotations

import ipaddress
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from core.errors import ConfigError
from core.ratelimit import (
    RateLimitSettings,
    SharedCounter,
    Verdict,
    address_key,
    client_address,
    tightest,
)


def request_from(peer: str, xff: list[str] | None = None) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 40000) if name == "peername" else default
    headers = CIMultiDict([("X-Forwarded-For", v) for v in (xff or [])])
    return make_mocked_request("GET", "/xrpc/x", headers=headers, transport=transport)


PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


def test_forwarded_for_only_from_trusted_proxies() -> None:
    # Never by default: anyone can send the header.
    assert str(client_address(request_from("203.0.113.9", ["1.2.3.4"]), ())) == "203.0.113.9"
    # A trusted proxy: the nearest untrusted hop from the right, whatever the client prepended.
    spoofed = request_from("10.0.0.2", ["6.6.6.6, 198.51.100.7", "10.0.0.1"])
    assert str(client_address(spoofed, PROXIES)) == "198.51.100.7"
    # Peer not trusted: its header is ignored.
    assert str(client_address(request_from("198.51.100.1", ["1.2.3.4"]), PROXIES)) == "198.51.100.1"
    # Garbage beyond our proxies: stop at the last hop we can vouch for.
    assert str(client_address(request_from("10.0.0.2", ["not-an-ip, 10.0.0.5"]), PROXIES)) == "10.0.0.5"
    # Only proxies: the leftmost one.
    assert str(client_address(request_from("127.0.0.1", ["10.1.1.1"]), PROXIES)) == "10.1.1.1"
    assert client_address(request_from("127.0.0.1"), PROXIES) == ipaddress.ip_address("127.0.0.1")


def test_address_keys() -> None:
    assert address_key(ipaddress.ip_address("203.0.113.9")) == "203.0.113.9"
    a = address_key(ipaddress.ip_address("2001:db8:1:2:aaaa::1"))
    b = address_key(ipaddress.ip_address("2001:db8:1:2:ffff::9"))
    assert a == b == "2001:db8:1:2::/64"  # one budget per /64
    mapped = request_from("::ffff:203.0.113.9")
    assert str(client_address(mapped, ())) == "203.0.113.9"


def test_headers_and_tightest() -> None:
    ok = Verdict(True, 100, 40, 1_000_300, 300)
    assert ok.headers(1_000_000.0) == {"RateLimit-Limit": "100", "RateLimit-Remaining": "40",
                                       "RateLimit-Reset": "1000300", "RateLimit-Policy": "100;w=300"}
    refused = Verdict(False, 10, 0, 1_000_300, 300)
    assert refused.headers(1_000_299.2)["Retry-After"] == "1"
    assert refused.headers(1_000_000.0)["Retry-After"] == "300"
    assert tightest([ok, Verdict(True, 50, 3, 1_000_300, 300)]).remaining == 3  # type: ignore[union-attr]
    assert tightest([ok, refused]) is refused
    assert tightest([]) is None


class FakeTable:
    """What the upsert does, in memory: several counters share one."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], int] = {}
        self.statements = 0

    async def fetch(self, _sql: str, keys: list[str], starts: list[int], _ends: list[int], hits: list[int],
                    watched_keys: list[str], watched_starts: list[int]) -> Any:
        self.statements += 1
        out = []
        for k, s, n in zip(keys, starts, hits, strict=True):
            self.rows[(k, s)] = self.rows.get((k, s), 0) + n
            out.append({"key": k, "window_start": s, "hits": self.rows[(k, s)]})
        for k, s in zip(watched_keys, watched_starts, strict=True):
            if (k, s) in self.rows:
                out.append({"key": k, "window_start": s, "hits": self.rows[(k, s)]})
        return out

    async def execute(self, _sql: str, *_args: Any) -> str:
        return "DELETE 0"


async def test_counters_meet_at_sync_and_windows_roll() -> None:
    now = [600.0]
    table = FakeTable()
    a = SharedCounter(table, 60, clock=lambda: now[0])
    b = SharedCounter(table, 60, clock=lambda: now[0])
    assert [a.take("k", 5).remaining for _ in range(3)] == [4, 3, 2]
    assert table.statements == 0  # nothing on the request's path
    await a.sync()
    assert b.take("k", 5).remaining == 4   # b has not synced: it knows only its own hit (the slack)
    await b.sync()                         # ...and learns the total (3 + 1)
    assert b.take("k", 5).remaining == 0
    statements = table.statements
    await b.sync()
    await a.sync()  # a adds nothing but re-reads "k": it saw it at half its limit
    assert table.statements == statements + 2
    assert not a.take("k", 5).allowed and not b.take("k", 5).allowed
    assert table.rows[("k", 600)] == 5
    now[0] = 660.0  # the next window
    verdict = a.take("k", 5)
    assert verdict.allowed and verdict.remaining == 4 and verdict.reset_at == 720


async def test_failed_sync_keeps_the_hits() -> None:
    table = FakeTable()
    counter = SharedCounter(table, 60, clock=lambda: 600.0)
    counter.take("k", 5)
    table.fetch = mock.AsyncMock(side_effect=OSError("down"))  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await counter.sync()
    assert counter.take("k", 5).remaining == 3  # still counted locally
    table.fetch = FakeTable().fetch  # type: ignore[method-assign]
    await counter.sync()
    assert counter.take("k", 5, consume=False).remaining == 3


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLYR_RATE_LIMIT", "PLYR_RATE_LIMIT_IP", "PLYR_TRUSTED_PROXIES", "PLYR_RATE_LIMIT_LOOPBACK"):
        monkeypatch.delenv(name, raising=False)
    default = RateLimitSettings.from_env()
    assert default == RateLimitSettings() and default.enabled and not default.loopback
    assert default.trusted_proxies == ()
    monkeypatch.setenv("PLYR_TRUSTED_PROXIES", "10.0.0.0/8, ::1")
    monkeypatch.setenv("PLYR_RATE_LIMIT", "off")
    s = RateLimitSettings.from_env()
    assert not s.enabled and [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    monkeypatch.setenv("PLYR_TRUSTED_PROXIES", "my-proxy")
    with pytest.raises(ConfigError, match="PLYR_TRUSTED_PROXIES"):
        RateLimitSettings.from_env()
