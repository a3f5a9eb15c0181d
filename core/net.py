"""Outbound HTTP whose destination comes from network data: no private or loopback addresses.

Anyone can publish a DID document, a handle or a PDS endpoint naming `localhost`, `10.0.0.5` or
`169.254.169.254` (cloud metadata); fetching it blindly lets them reach services that only
trust our own network (SSRF). Unless PLYR_ALLOW_PRIVATE_NETWORK is on (tests, a PDS on your own
machine), `outbound_connector` builds an aiohttp connector that checks the addresses it is about
to connect to, not the names:

- `GuardedResolver` drops blocked addresses from each DNS answer and refuses a name left with
  none. aiohttp connects to exactly the addresses of that answer, so a name that first resolves
  to a public address and later to a private one (DNS rebinding) is checked again each time.
- `guarded_socket` (the connector's socket factory) refuses a blocked address when the socket
  is made. This also covers IP-literal hosts, which aiohttp never passes to the resolver, and
  every redirect hop.

This lives in core rather than protocol/ because it is a deployment policy tied to a setting,
shared by identity resolution (built in core/identity.py), the backfill client
(indexer/backfill/runner.py) and the media blob mirror (media/mirror.py).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from core import settings
from core.settings import ALLOW_PRIVATE_NETWORK_VAR

# (family, type, proto, canonname, sockaddr), what aiohttp hands a socket factory.
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]

# NAT64 (RFC 6052): 64:ff9b::a.b.c.d reaches the IPv4 address a.b.c.d through the gateway.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedAddressError(OSError):
    """A connection the guard refused: `host` resolves to (or is) non-public `addresses`.

    An OSError so that aiohttp reports it as a connection error of the request
    (`aiohttp.ClientConnectorError`); `guard_refusal` finds it again behind that.
    """

    def __init__(self, host: str, addresses: Sequence[str], reason: str) -> None:
        shown = ", ".join(addresses[:4]) + (", ..." if len(addresses) > 4 else "")
        target = host if list(addresses) == [host] else f"{host} ({shown})"
        super().__init__(
            errno.EACCES,
            f"refused to connect to {target}: {reason} address, not public "
            f"({ALLOW_PRIVATE_NETWORK_VAR}=true allows it, for tests and local development only)",
        )
        self.host = host
        self.addresses = tuple(addresses)
        self.reason = reason


def blocked_reason(address: str) -> str | None:
    """Why `address` (an IP address string) must not be connected to, or None when it is public."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "an unparsable"
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address reach that address: the IPv4 one decides.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
        if embedded is not None:
            return blocked_reason(str(embedded))
        if ip.is_site_local:
            return "a site-local"
    for reason, flagged in (
        ("an unspecified", ip.is_unspecified),
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),
        ("a multicast", ip.is_multicast),
        ("a private", ip.is_private),
        ("a reserved", ip.is_reserved),
    ):
        if flagged:
            return reason
    if not ip.is_global:  # e.g. 100.64.0.0/10, carrier-grade NAT
        return "a non-global"
    return None


class GuardedResolver(AbstractResolver):
    """Wraps a resolver (default: aiohttp's threaded getaddrinfo) and keeps only public addresses.

    Closing it closes the wrapped resolver; aiohttp does not close a resolver it was given, and
    the default threaded one holds nothing to close.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        allowed = [a for a in answers if blocked_reason(a["host"]) is None]
        if answers and not allowed:
            addresses = [a["host"] for a in answers]
            raise BlockedAddressError(host, addresses, blocked_reason(addresses[0]) or "")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket(addr_info: AddrInfo) -> socket.socket:
    """A socket factory for aiohttp.TCPConnector that refuses non-public destinations."""
    family, sock_type, proto, _canonname, sockaddr = addr_info
    address = str(sockaddr[0])
    reason = blocked_reason(address)
    if reason is not None:
        raise BlockedAddressError(address, [address], reason)
    return socket.socket(family=family, type=sock_type, proto=proto)


def outbound_connector(
    *,
    allow_private_network: bool | None = None,
    resolver: AbstractResolver | None = None,
    **options: Any,
) -> aiohttp.TCPConnector:
    """An aiohttp connector for fetches that network data points at.

    `allow_private_network`: None reads PLYR_ALLOW_PRIVATE_NETWORK; when true the connector is
    a plain one. `resolver` replaces the system resolver (tests); `options` go to TCPConnector.
    Must be called inside a running event loop, like TCPConnector itself.
    """
    if allow_private_network is None:
        allow_private_network = settings.allow_private_network()
    if allow_private_network:
        return aiohttp.TCPConnector(resolver=resolver, **options)
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(resolver), socket_factory=guarded_socket, **options
    )


def guard_refusal(exc: BaseException | None) -> BlockedAddressError | None:
    """The guard's refusal behind `exc` (e.g. an aiohttp.ClientConnectorError), else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BlockedAddressError):
            return exc
        seen.add(id(exc))
        nested = getattr(exc, "os_error", None)
        exc = nested if isinstance(nested, BaseException) else (exc.__cause__ or exc.__context__)
    return None


def refusal_reason(exc: BaseException) -> str | None:
    """The guard's message when it refused the connection behind `exc`, else None (what
    `protocol.identity` asks to tell a refused address from an unreachable one)."""
    refused = guard_refusal(exc)
    return refused.strerror if refused is not None else None
