"""The outbound address guard (core/net.py): what it refuses, what it lets through, and that the
setting turns it off. Requests that must be refused go to a real server on 127.0.0.1 that counts
its hits, so "refused" also means "nothing arrived"."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from core.net import (
    BlockedAddressError,
    GuardedResolver,
    blocked_reason,
    guard_refusal,
    guarded_socket,
    outbound_connector,
)
from core.settings import ALLOW_PRIVATE_NETWORK_VAR, allow_private_network
from tests.support.stub_resolver import StubResolver


class CountingServer:
    def __init__(self) -> None:
        self.hits = 0
        self.port = 0


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    state = CountingServer()

    async def hello(_request: web.Request) -> web.Response:
        state.hits += 1
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


async def _fetch(connector: aiohttp.TCPConnector, url: str) -> str:
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.get(url) as resp,
    ):
        return await resp.text()


async def _refusal(connector: aiohttp.TCPConnector, url: str) -> BlockedAddressError:
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await _fetch(connector, url)
    refused = guard_refusal(info.value)
    assert refused is not None, f"not refused by the guard: {info.value!r}"
    return refused


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback"),
        ("127.8.9.10", "a loopback"),
        ("::1", "a loopback"),
        ("10.1.2.3", "a private"),
        ("172.16.0.1", "a private"),
        ("192.168.1.1", "a private"),
        ("169.254.169.254", "a link-local"),
        ("fe80::1", "a link-local"),
        ("fc00::1", "a private"),
        ("fd12:3456::1", "a private"),
        ("0.0.0.0", "an unspecified"),
        ("::", "an unspecified"),
        ("224.0.0.1", "a multicast"),
        ("ff02::1", "a multicast"),
        ("240.0.0.1", "a private"),  # reserved class E; Python files it under is_private
        ("100.64.0.1", "a non-global"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "a loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "a private"),
        ("2002:7f00:1::", "a loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "a link-local"),  # NAT64 of 169.254.169.254
        ("not-an-ip", "an unparsable"),
    ],
)
def test_non_public_addresses_are_blocked(address: str, reason: str) -> None:
    assert blocked_reason(address) == reason


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(address) is None


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "10.0.0.7", "192.168.0.10", "169.254.169.254", "[fc00::1]", "[fe80::1]"],
)
async def test_ip_literal_urls_are_refused(host: str) -> None:
    # aiohttp does not ask the resolver about IP literals: the socket factory refuses them.
    refused = await _refusal(outbound_connector(allow_private_network=False), f"http://{host}:9/")
    assert refused.addresses == (host.strip("[]"),)
    assert ALLOW_PRIVATE_NETWORK_VAR in str(refused)


async def test_a_name_resolving_to_loopback_is_refused(server: CountingServer) -> None:
    stub = StubResolver({"evil.example": ["127.0.0.1"]})
    url = f"http://evil.example:{server.port}/"
    refused = await _refusal(outbound_connector(allow_private_network=False, resolver=stub), url)
    assert refused.host == "evil.example" and refused.addresses == ("127.0.0.1",)
    assert "loopback" in str(refused) and stub.lookups == ["evil.example"]
    assert server.hits == 0
    # The same name and server, with private networks allowed: the guard is what stopped it.
    assert (
        await _fetch(outbound_connector(allow_private_network=True, resolver=stub), url) == "hello"
    )
    assert server.hits == 1


async def test_rebinding_to_loopback_is_refused_at_the_next_connection(
    server: CountingServer,
) -> None:
    # First answer public, then private: every answer aiohttp connects with is checked.
    stub = StubResolver({"rebind.example": ["93.184.215.14"]})
    guarded = GuardedResolver(stub)
    assert [a["host"] for a in await guarded.resolve("rebind.example", 80)] == ["93.184.215.14"]
    stub.answers["rebind.example"] = ["127.0.0.1"]
    with pytest.raises(BlockedAddressError):
        await guarded.resolve("rebind.example", 80)
    connector = outbound_connector(allow_private_network=False, resolver=stub, use_dns_cache=False)
    await _refusal(connector, f"http://rebind.example:{server.port}/")
    assert server.hits == 0


async def test_private_addresses_are_dropped_from_a_mixed_answer() -> None:
    stub = StubResolver({"mixed.example": ["10.0.0.1", "93.184.215.14", "::1"]})
    answers = await GuardedResolver(stub).resolve("mixed.example", 443)
    assert [a["host"] for a in answers] == ["93.184.215.14"]


async def test_a_public_answer_passes_unchanged() -> None:
    stub = StubResolver({"public.example": ["93.184.215.14", "2606:4700:4700::1111"]})
    assert await GuardedResolver(stub).resolve("public.example", 443) == await stub.resolve(
        "public.example", 443
    )


def test_the_socket_factory_refuses_private_and_makes_public_sockets() -> None:
    with pytest.raises(BlockedAddressError, match="link-local"):
        guarded_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80)))
    with pytest.raises(BlockedAddressError, match="loopback"):
        guarded_socket((socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 80, 0, 0)))
    sock = guarded_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)))
    try:
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    finally:
        sock.close()


async def test_the_setting_decides_the_default(
    server: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{server.port}/"
    monkeypatch.delenv(ALLOW_PRIVATE_NETWORK_VAR)
    assert allow_private_network() is False  # off unless asked for
    await _refusal(outbound_connector(), url)
    monkeypatch.setenv(ALLOW_PRIVATE_NETWORK_VAR, "false")
    await _refusal(outbound_connector(), url)
    assert server.hits == 0
    monkeypatch.setenv(ALLOW_PRIVATE_NETWORK_VAR, "true")
    assert await _fetch(outbound_connector(), url) == "hello"
    assert server.hits == 1


async def test_ordinary_connection_errors_are_not_refusals() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await _fetch(outbound_connector(allow_private_network=True), f"http://127.0.0.1:{port}/")
    assert guard_refusal(info.value) is None
