"""DID document parsing, and IdentityResolver against a PLC/did:web/PDS stand-in on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rrset
import libipld
import pytest
from aiohttp.abc import AbstractResolver

from core.identity import build_resolver, resolver_from_env
from protocol.crypto import PrivateKey
from protocol.identity import (
    DidDocument,
    IdentityError,
    IdentityResolver,
    did_from_txt_records,
    did_from_well_known,
    parse_did_document,
)

from .fake_identity_server import FakeIdentityServer, did_doc, random_plc_did


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[FakeIdentityServer]:
    srv = FakeIdentityServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def resolver(server: FakeIdentityServer, clock: FakeClock) -> AsyncIterator[IdentityResolver]:
    res = IdentityResolver(
        server.url,
        allow_private_network=True,
        timeout=2.0,
        cache_ttl=100,
        negative_ttl=10,
        refresh_floor=0,
        handle_resolver_url=server.url,
        clock=clock,
    )
    yield res
    await res.close()


def _key_doc(did: str, **kw: Any) -> tuple[PrivateKey, dict[str, Any]]:
    key = PrivateKey.generate("k256")
    return key, did_doc(did, key.public_key(), **kw)


# ---- parsing ----


def test_parse_plc_shaped_document() -> None:
    did = random_plc_did()
    key, doc = _key_doc(did, handle="Alice.Example.COM", pds="https://pds.example.com/")
    parsed = parse_did_document(did, doc)
    assert parsed.did == did
    assert parsed.handle == "alice.example.com"
    assert parsed.pds_endpoint == "https://pds.example.com"
    assert parsed.signing_key == key.public_key()
    assert parsed.raw is doc


def test_parse_web_shaped_document_with_relative_ids_and_legacy_key() -> None:
    did = "did:web:music.example.org"
    key = PrivateKey.generate("p256")
    legacy = libipld.encode_multibase("z", key.public_key().uncompressed())
    doc = {
        "id": did,
        "alsoKnownAs": ["https://music.example.org", "at://not a handle", "at://music.example.org"],
        "verificationMethod": [
            {
                "id": "#atproto",
                "type": "EcdsaSecp256r1VerificationKey2019",
                "controller": did,
                "publicKeyMultibase": legacy,
            }
        ],
        "service": [
            {
                "id": f"{did}#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.music.example.org:8443",
            }
        ],
    }
    parsed = parse_did_document(did, doc)
    assert parsed.handle == "music.example.org"
    assert parsed.signing_key == key.public_key()
    assert parsed.pds_endpoint == "https://pds.music.example.org:8443"


def test_parse_document_with_missing_or_bad_parts() -> None:
    did = random_plc_did()
    parsed = parse_did_document(did, {"id": did})
    assert (parsed.handle, parsed.pds_endpoint, parsed.signing_key) == (None, None, None)

    good = PrivateKey.generate("k256").public_key()
    doc = {
        "id": did,
        "alsoKnownAs": "at://not-a-list.com",
        "verificationMethod": [
            "junk",
            {
                "id": "#atproto",
                "type": "Multikey",
                "controller": "did:plc:someoneelse",
                "publicKeyMultibase": good.multibase(),
            },
            {
                "id": "#atproto",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": "zgarbage",
            },
            {
                "id": "#atproto_label",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": good.multibase(),
            },
        ],
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.example.com/some/path",
            },
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "ftp://pds.example.com",
            },
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://user:pw@pds.example.com",
            },
            {
                "id": "#atproto_pds",
                "type": "SomethingElse",
                "serviceEndpoint": "https://other.example.com",
            },
            {
                "id": "#other",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://other.example.com",
            },
        ],
    }
    parsed = parse_did_document(did, doc)
    assert (parsed.handle, parsed.pds_endpoint, parsed.signing_key) == (None, None, None)
    # Other verification methods stay reachable by fragment (e.g. labelers' keys).
    assert parsed.verification_key("#atproto_label") == good


def test_first_valid_key_and_service_win() -> None:
    did = random_plc_did()
    first, second = (PrivateKey.generate("k256").public_key() for _ in range(2))
    doc = {
        "id": did,
        "verificationMethod": [
            {
                "id": "#atproto",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": first.multibase(),
            },
            {
                "id": "#atproto",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": second.multibase(),
            },
        ],
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "http://localhost:2583",
            },
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://b.example.com",
            },
        ],
    }
    parsed = parse_did_document(did, doc)
    assert parsed.signing_key == first
    assert parsed.pds_endpoint == "http://localhost:2583"


@pytest.mark.parametrize("doc", [{"id": "did:plc:somebodyelseentirely234"}, {}, [], "text"])
def test_document_for_another_did_is_rejected(doc: Any) -> None:
    with pytest.raises(IdentityError) as info:
        parse_did_document(random_plc_did(), doc)
    assert info.value.kind == "bad_document"


# ---- resolution ----


async def test_resolve_plc_caches_until_ttl(
    server: FakeIdentityServer, resolver: IdentityResolver, clock: FakeClock
) -> None:
    did = random_plc_did()
    key, server.plc[did] = _key_doc(did, handle="alice.test")
    doc = await resolver.resolve_did(did)
    assert isinstance(doc, DidDocument) and doc.signing_key == key.public_key()
    assert await resolver.resolve_did(did) is doc
    assert server.requests[did] == 1
    clock.now += 99
    await resolver.resolve_did(did)
    assert server.requests[did] == 1
    clock.now += 2  # past the 100 s TTL
    await resolver.resolve_did(did)
    assert server.requests[did] == 2


async def test_fresh_and_invalidate_bypass_cache(
    server: FakeIdentityServer, resolver: IdentityResolver
) -> None:
    did = random_plc_did()
    _, server.plc[did] = _key_doc(did)
    await resolver.resolve_did(did)
    await resolver.resolve_did(did, fresh=True)
    assert server.requests[did] == 2
    rotated, server.plc[did] = _key_doc(did)
    resolver.invalidate(did)
    assert await resolver.signing_key(did) == rotated.public_key()
    assert server.requests[did] == 3


async def test_refresh_floor_limits_forced_refreshes(
    server: FakeIdentityServer, resolver: IdentityResolver, clock: FakeClock
) -> None:
    did = random_plc_did()
    _, server.plc[did] = _key_doc(did)
    resolver.refresh_floor = 5
    await resolver.resolve_did(did)
    await resolver.resolve_did(did, fresh=True)
    assert server.requests[did] == 1  # fetched a moment ago: fresh enough
    clock.now += 6
    await resolver.resolve_did(did, fresh=True)
    assert server.requests[did] == 2


async def test_resolve_did_web_on_localhost(
    server: FakeIdentityServer, resolver: IdentityResolver
) -> None:
    did = server.web_did
    key, server.web_doc = _key_doc(did, handle="web.test")
    doc = await resolver.resolve_did(did)
    assert doc.did == did and doc.signing_key == key.public_key() and doc.handle == "web.test"
    strict = build_resolver(server.url, allow_private_network=False)
    with pytest.raises(IdentityError) as info:
        await strict.resolve_did(did)
    assert info.value.kind == "unsupported"
    await strict.close()


async def test_not_found_is_an_error_and_briefly_cached(
    server: FakeIdentityServer, resolver: IdentityResolver, clock: FakeClock
) -> None:
    did = random_plc_did()
    for _ in range(2):
        with pytest.raises(IdentityError) as info:
            await resolver.resolve_did(did)
        assert info.value.kind == "not_found" and did in str(info.value)
    assert server.requests[did] == 1
    clock.now += 11
    _, server.plc[did] = _key_doc(did)
    assert (await resolver.resolve_did(did)).did == did


@pytest.mark.parametrize(
    ("setup", "kind"),
    [
        (lambda s, d: s.status.__setitem__(d, 500), "unreachable"),
        (lambda s, d: s.plc.__setitem__(d, b"{not json"), "bad_document"),
        (
            lambda s, d: s.plc.__setitem__(d, {"id": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}),
            "bad_document",
        ),
        (lambda s, d: s.plc.__setitem__(d, b'{"id": "' + b"x" * 2_000_000 + b'"}'), "too_large"),
        (lambda s, d: s.huge.add(d), "too_large"),
    ],
    ids=["http-500", "bad-json", "wrong-id", "big-with-length", "endless-stream"],
)
async def test_bad_answers(
    server: FakeIdentityServer, resolver: IdentityResolver, setup: Any, kind: str
) -> None:
    did = random_plc_did()
    setup(server, did)
    started = time.monotonic()
    with pytest.raises(IdentityError) as info:
        await resolver.resolve_did(did)
    assert info.value.kind == kind
    assert time.monotonic() - started < 2


async def test_timeout(server: FakeIdentityServer, resolver: IdentityResolver) -> None:
    did = random_plc_did()
    _, server.plc[did] = _key_doc(did)
    server.slow[did] = 5
    resolver.timeout = 0.3
    started = time.monotonic()
    with pytest.raises(IdentityError) as info:
        await resolver.resolve_did(did)
    assert info.value.kind == "timeout"
    assert time.monotonic() - started < 1.5


async def test_unreachable_directory() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with IdentityResolver(f"http://127.0.0.1:{port}", allow_private_network=True, timeout=2) as res:
        with pytest.raises(IdentityError) as info:
            await res.resolve_did(random_plc_did())
        assert info.value.kind == "unreachable"


async def test_stale_document_served_when_directory_fails(
    server: FakeIdentityServer, resolver: IdentityResolver, clock: FakeClock
) -> None:
    did = random_plc_did()
    key, server.plc[did] = _key_doc(did)
    await resolver.resolve_did(did)
    clock.now += 1000
    server.status[did] = 503
    assert (await resolver.resolve_did(did)).signing_key == key.public_key()
    assert server.requests[did] == 2


@pytest.mark.parametrize(
    ("did", "kind"),
    [
        ("not-a-did", "invalid"),
        ("did:plc:UPPERCASE", "invalid"),
        ("did:plc:short", "invalid"),
        ("did:key:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc", "unsupported"),
        ("did:web:example.com:users:alice", "unsupported"),
        ("did:web:example.com%3A8080", "invalid"),
        ("did:web:blah.onion", "unsupported"),
    ],
)
async def test_invalid_dids(resolver: IdentityResolver, did: str, kind: str) -> None:
    with pytest.raises(IdentityError) as info:
        await resolver.resolve_did(did)
    assert info.value.kind == kind


async def test_concurrent_lookups_share_one_request(
    server: FakeIdentityServer, resolver: IdentityResolver
) -> None:
    did = random_plc_did()
    key, server.plc[did] = _key_doc(did)
    server.slow[did] = 0.2
    docs = await asyncio.gather(*(resolver.resolve_did(did) for _ in range(25)))
    assert server.requests[did] == 1
    assert all(d is docs[0] for d in docs) and docs[0].signing_key == key.public_key()
    # Failures are shared too, and a cancelled waiter does not cancel the others.
    missing = random_plc_did()
    server.slow[missing] = 0.2
    waiters = [asyncio.ensure_future(resolver.resolve_did(missing)) for _ in range(5)]
    await asyncio.sleep(0.05)
    waiters[0].cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(r, IdentityError) and r.kind == "not_found" for r in results[1:])
    assert server.requests[missing] == 1


async def test_signing_key_missing(server: FakeIdentityServer, resolver: IdentityResolver) -> None:
    did = random_plc_did()
    server.plc[did] = did_doc(did, None)
    with pytest.raises(IdentityError) as info:
        await resolver.signing_key(did)
    assert "signing key" in str(info.value)


# ---- handles ----


async def test_verified_handle_both_directions(
    server: FakeIdentityServer, resolver: IdentityResolver
) -> None:
    alice = random_plc_did()
    _, server.plc[alice] = _key_doc(alice, handle="alice.test")
    server.handles["alice.test"] = alice
    assert await resolver.resolve_handle("Alice.TEST") == alice
    assert await resolver.verified_handle(alice) == "alice.test"

    # Mallory claims alice's handle in her document: the handle points elsewhere, so no.
    mallory = random_plc_did()
    _, server.plc[mallory] = _key_doc(mallory, handle="alice.test")
    assert await resolver.verified_handle(mallory) is None

    # A handle that resolves to the DID, but the document does not claim it: no.
    bob = random_plc_did()
    _, server.plc[bob] = _key_doc(bob, handle=None)
    server.handles["bob.test"] = bob
    assert await resolver.verified_handle(bob) is None

    # Claimed but not resolvable, and an unresolvable DID: no.
    carol = random_plc_did()
    _, server.plc[carol] = _key_doc(carol, handle="carol.test")
    assert await resolver.verified_handle(carol) is None
    assert await resolver.verified_handle(random_plc_did()) is None


async def test_handle_results_are_cached(
    server: FakeIdentityServer, resolver: IdentityResolver, clock: FakeClock
) -> None:
    did = random_plc_did()
    server.handles["dave.test"] = did
    assert await resolver.resolve_handle("dave.test") == did
    assert await resolver.resolve_handle("dave.test") == did
    assert server.requests["handle:dave.test"] == 1
    assert await resolver.resolve_handle("nobody.test") is None
    assert await resolver.resolve_handle("nobody.test") is None
    assert server.requests["handle:nobody.test"] == 1
    clock.now += 11
    server.handles["nobody.test"] = did
    assert await resolver.resolve_handle("nobody.test") == did


@pytest.mark.parametrize(
    "handle", ["not a handle", "laptop.local", "x.onion", "org", "a" * 300 + ".com"]
)
async def test_invalid_handles_do_not_resolve(
    server: FakeIdentityServer, resolver: IdentityResolver, handle: str
) -> None:
    assert await resolver.resolve_handle(handle) is None
    assert not any(k.startswith("handle:") for k in server.requests)


def test_txt_and_well_known_parsing() -> None:
    did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
    assert did_from_txt_records([f"did={did}", "v=spf1 -all"]) == did
    assert did_from_txt_records([f"did={did}", f"did={did}"]) == did
    assert did_from_txt_records([f"did={did}", "did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"]) is None
    assert did_from_txt_records(["v=spf1 -all"]) is None
    assert did_from_txt_records(["did=nonsense"]) is None
    assert did_from_well_known(f"  {did}\n".encode()) == did
    assert did_from_well_known(b"<html>hello</html>") is None
    assert did_from_well_known(b"\xff\xfe") is None


class _FakeDns(asyncio.DatagramProtocol):
    """Answers TXT queries from a dict; NXDOMAIN for anything else."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        values = self.records.get(question.name.to_text().rstrip("."))
        if values is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, "IN", "TXT", [f'"{v}"' for v in values])
            )
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


class _LoopbackOnly(AbstractResolver):
    """Resolves every host name to 127.0.0.1 so the HTTPS method cannot leave this machine."""

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[dict[str, Any]]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


async def test_dns_txt_resolution_and_conflicts() -> None:
    did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
    records = {
        "_atproto.dns.example.com": [f"did={did}", "unrelated"],
        "_atproto.twice.example.com": [f"did={did}", "did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"],
    }
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _FakeDns(records), local_addr=("127.0.0.1", 0)
    )
    dns_resolver = dns.asyncresolver.Resolver(configure=False)
    dns_resolver.nameservers = ["127.0.0.1"]
    dns_resolver.port = transport.get_extra_info("sockname")[1]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=_LoopbackOnly()))
    res = IdentityResolver(
        "http://127.0.0.1:9", session=session, dns_resolver=dns_resolver, timeout=1,
        allow_private_network=True,
    )
    try:
        assert await res.resolve_handle("dns.example.com") == did
        assert await res.resolve_handle("twice.example.com") is None
        assert await res.resolve_handle("missing.example.com") is None
    finally:
        transport.close()
        await session.close()


def test_resolver_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLYR_PLC_URL", "http://127.0.0.1:2582/")
    monkeypatch.setenv("PLYR_HANDLE_RESOLVER_URL", "http://localhost:2583")
    res = resolver_from_env()
    assert res.plc_url == "http://127.0.0.1:2582"
    assert res.handle_resolver_url == "http://localhost:2583"
    monkeypatch.delenv("PLYR_PLC_URL")
    monkeypatch.delenv("PLYR_HANDLE_RESOLVER_URL")
    res = resolver_from_env()
    assert res.plc_url == "https://plc.directory" and res.handle_resolver_url is None
