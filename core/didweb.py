"""A service's own did:web: the DID document it serves at `/.well-known/did.json`, and the check
that the DID names the host the service is reached at.

did:web resolves `did:web:<host>` to `https://<host>/.well-known/did.json` (a port, allowed for
localhost in development, is written `%3A`), so a service can only publish the document of a
did:web whose host (and port) is its own public one: anything else is a misconfiguration that
no PDS could follow, refused at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from core.errors import ConfigError

DID_CONTEXT = "https://www.w3.org/ns/did/v1"
DID_JSON_PATH = "/.well-known/did.json"
# Resolvers cache documents anyway; 5 minutes lets an endpoint change spread within that.
DID_JSON_CACHE_CONTROL = "public, max-age=300"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def did_web_host(did: str) -> str | None:
    """The `host[:port]` (lowercase, port decoded) a did:web names; None for other methods.
    Path-based did:web (`did:web:host:path`) is not part of atproto: a ConfigError."""
    if not did.startswith("did:web:"):
        return None
    ident = did[len("did:web:"):]
    if not ident or ":" in ident or "/" in ident or "#" in ident:
        raise ConfigError(f"{did!r} is not a hostname-level did:web (atproto has no path-based did:web)")
    return ident.replace("%3A", ":").replace("%3a", ":").lower()


def url_host(url: str) -> str:
    """`host[:port]` of an http(s) URL, lowercase, without the scheme's default port."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        return host
    return f"{host}:{port}"


def did_web_for(url: str) -> str:
    """The did:web of the host of `url` (a port encoded as `%3A`)."""
    return "did:web:" + url_host(url).replace(":", "%3A")


def check_did_host(did: str, public_url: str, *, did_var: str, url_var: str) -> None:
    """Refuse a did:web whose host is not the public URL's (other DID methods pass: their
    document lives elsewhere, e.g. in the PLC directory)."""
    host = did_web_host(did)
    if host is not None and host != url_host(public_url):
        raise ConfigError(
            f"{did_var}={did} names host {host!r} but {url_var}={public_url} is host "
            f"{url_host(public_url)!r}: a did:web document is served by its own host "
            f"(use {did_web_for(public_url)} or fix {url_var})"
        )


MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"


def did_document(
    did: str, services: list[tuple[str, str, str]], keys: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """A DID document naming `services` as (fragment without '#', type, endpoint URL) and
    `keys` as (fragment without '#', Multikey `publicKeyMultibase`), each controlled by `did`."""
    doc: dict[str, Any] = {"@context": [DID_CONTEXT], "id": did}
    if keys:
        doc["@context"].append(MULTIKEY_CONTEXT)
        doc["verificationMethod"] = [
            {"id": f"{did}#{fragment}", "type": "Multikey", "controller": did, "publicKeyMultibase": multibase}
            for fragment, multibase in keys
        ]
    doc["service"] = [
        {"id": f"#{fragment}", "type": type_, "serviceEndpoint": endpoint} for fragment, type_, endpoint in services
    ]
    return doc


def add_did_json_route(
    app: web.Application, did: str, services: list[tuple[str, str, str]], keys: Sequence[tuple[str, str]] = ()
) -> None:
    """Serve the document of `did` at /.well-known/did.json when it is a did:web (a did:plc's
    document is published through the PLC directory, not by us)."""
    if did_web_host(did) is None:
        return
    body = orjson.dumps(did_document(did, services, keys))

    async def did_json(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json",
                            headers={"Cache-Control": DID_JSON_CACHE_CONTROL})

    app.router.add_get(DID_JSON_PATH, did_json)
