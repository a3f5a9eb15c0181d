"""IdentityResolver with private networks refused (the production default): did:web and handle
hosts, PLC URLs and redirects that lead to loopback/private addresses or plain http fail with a
clear IdentityError, and nothing reaches the server; with the setting on, loopback works."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import dns.resolver
import pytest
from aiohttp import web

from core.errors import ConfigError
from core.identity import build_resolver, resolver_from_env
from core.net import outbound_connector
from core.settings import ALLOW_PRIVATE_NETWORK_VAR
from protocol.crypto import PrivateKey
from protocol.identity import IdentityError, IdentityResolver, did_web_url
from tests.support.stub_resolver import StubResolver

from .fake_identity_server import FakeIdentityServer, did_doc, random_plc_did

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


class NoDns:
    """A dnspython-shaped resolver where no _atproto TXT record exists (no real DNS query)."""

    async def resolve(self, name: str, *_args: object, **_kw: object) -> None:
        raise dns.resolver.NXDOMAIN()


@pytest.fixture
async def server() -> AsyncIterator[FakeIdentityServer]:
    srv = FakeIdentityServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def redirector() -> AsyncIterator[str]:
    """http://127.0.0.1:PORT: /to?url=X redirects to X, /loop to itself, /did answers DID."""

    async def to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    async def loop(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def did(_request: web.Request) -> web.Response:
        return web.Response(text=DID)

    app = web.Application()
    app.router.add_get("/to", to)
    app.router.add_get("/loop", loop)
    app.router.add_get("/did", did)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def test_did_web_is_https_and_localhost_needs_the_setting() -> None:
    assert (
        did_web_url("did:web:music.example.org") == "https://music.example.org/.well-known/did.json"
    )
    with pytest.raises(IdentityError, match="private networks are not allowed") as info:
        did_web_url("did:web:localhost%3A2583")
    assert info.value.kind == "unsupported"
    assert (
        did_web_url("did:web:localhost%3A2583", allow_private_network=True)
        == "http://localhost:2583/.well-known/did.json"
    )


async def test_a_loopback_plc_directory_is_refused(server: FakeIdentityServer) -> None:
    did = random_plc_did()
    server.plc[did] = did_doc(did, PrivateKey.generate("k256").public_key())
    async with build_resolver(server.url, allow_private_network=False) as strict:
        with pytest.raises(IdentityError) as info:
            await strict.resolve_did(did)
    assert info.value.kind == "unsupported"
    assert "127.0.0.1" in str(info.value) and "loopback" in str(info.value)
    assert server.requests[did] == 0
    # The same directory with the setting on.
    async with IdentityResolver(server.url, allow_private_network=True) as open_:
        assert (await open_.resolve_did(did)).did == did
    assert server.requests[did] == 1


async def test_did_web_host_resolving_to_private_addresses_is_refused() -> None:
    stub = StubResolver({"evil-example.com": ["169.254.169.254"], "ten-example.net": ["10.0.0.8"]})
    connector = outbound_connector(allow_private_network=False, resolver=stub)
    async with aiohttp.ClientSession(connector=connector) as session:
        strict = build_resolver(
            "https://plc.directory",
            session=session,
            allow_private_network=False,
            timeout=2,
            dns_resolver=NoDns(),
        )
        for host, reason in (("evil-example.com", "link-local"), ("ten-example.net", "private")):
            with pytest.raises(IdentityError) as info:
                await strict.resolve_did(f"did:web:{host}")
            assert info.value.kind == "unsupported", info.value
            assert reason in str(info.value) and f"https://{host}/" in str(info.value)
        # A handle on such a host does not resolve (its well-known fetch is refused the same way).
        assert await strict.resolve_handle("alice.evil-example.com") is None
    assert set(stub.lookups) >= {"evil-example.com", "ten-example.net", "alice.evil-example.com"}


async def test_redirects_to_plain_http_are_refused(redirector: str) -> None:
    # A plain session reaches loopback; the https rule for redirects is the resolver's own.
    async with aiohttp.ClientSession() as session:
        strict = IdentityResolver(redirector, session=session, allow_private_network=False)
        lenient = IdentityResolver(redirector, session=session, allow_private_network=True)
        start = f"{redirector}/to?url={redirector}/did"
        with pytest.raises(IdentityError, match="refused") as info:
            await strict._get(start, limit=100, redirects=3, what="alice.test")
        assert info.value.kind == "unsupported"
        assert await lenient._get(start, limit=100, redirects=3, what="t") == (200, DID.encode())
        assert await lenient._get(
            f"{redirector}/to?url=/did", limit=100, redirects=1, what="t"
        ) == (
            200,
            DID.encode(),
        )
        with pytest.raises(IdentityError, match="refused"):
            await lenient._get(
                f"{redirector}/to?url=http://u:p@127.0.0.1/did", limit=100, redirects=3, what="t"
            )
        with pytest.raises(IdentityError, match="more than 3 redirects"):
            await lenient._get(f"{redirector}/loop", limit=100, redirects=3, what="t")
        # Without redirects allowed, the redirect is the answer (a non-2xx status).
        assert (await lenient._get(start, limit=100, redirects=0, what="t"))[0] == 302


async def test_the_default_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_PRIVATE_NETWORK_VAR)
    async with resolver_from_env() as res:
        assert res.allow_private_network is False
    monkeypatch.setenv(ALLOW_PRIVATE_NETWORK_VAR, "true")
    async with resolver_from_env() as res:
        assert res.allow_private_network is True


def test_refusing_private_networks_needs_a_guarded_connection() -> None:
    # protocol/ has no address guard of its own: a strict resolver must be handed one.
    with pytest.raises(ValueError, match="guarded"):
        IdentityResolver("https://plc.directory", allow_private_network=False)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PLYR_PLC_URL", "http://127.0.0.1:2582"),
        ("PLYR_PLC_URL", "http://[::1]:2582"),
        ("PLYR_PLC_URL", "http://10.0.0.5"),
        ("PLYR_HANDLE_RESOLVER_URL", "http://localhost:2583"),
    ],
)
def test_resolver_from_env_rejects_private_urls_when_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(ALLOW_PRIVATE_NETWORK_VAR, "false")
    monkeypatch.delenv("PLYR_HANDLE_RESOLVER_URL", raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=ALLOW_PRIVATE_NETWORK_VAR):
        resolver_from_env()
    monkeypatch.setenv(ALLOW_PRIVATE_NETWORK_VAR, "true")
    assert resolver_from_env().allow_private_network is True


def test_resolver_from_env_accepts_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_PRIVATE_NETWORK_VAR, "false")
    monkeypatch.setenv("PLYR_PLC_URL", "https://plc.example.com")
    monkeypatch.setenv("PLYR_HANDLE_RESOLVER_URL", "https://pds.example.com")
    res = resolver_from_env()
    assert res.plc_url == "https://plc.example.com" and res.allow_private_network is False
