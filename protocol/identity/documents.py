"""DID documents: what atproto reads from one (handle, PDS endpoint, keys), and where a did:web
document lives. Pure functions of their input; fetching is `protocol.identity.resolver`'s job."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from protocol.crypto import (
    LEGACY_KEY_TYPES,
    KeyFormatError,
    PublicKey,
    parse_legacy_multibase,
    parse_multikey,
)
from protocol.identity.errors import IdentityError
from protocol.syntax import is_valid

PLC_DID_RE = re.compile(r"did:plc:[a-z2-7]{24}")
# TLDs that must always fail resolution (handle spec, "Additional Non-Syntax Restrictions").
DISALLOWED_TLDS = frozenset(
    {"alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"}
)
_LOOPBACK_HOSTS = frozenset({"localhost"})


def is_valid_did(value: str) -> bool:
    return is_valid("did", value)


def normalize_handle(value: str) -> str | None:
    """The lowercased handle when `value` has handle syntax, else None."""
    return value.lower() if is_valid("handle", value) else None


def has_disallowed_tld(handle: str) -> bool:
    return handle.rsplit(".", 1)[-1].lower() in DISALLOWED_TLDS


def _matches_fragment(entry_id: Any, did: str, fragment: str) -> bool:
    # Both the relative ("#atproto") and the fully-qualified ("did:...#atproto") forms are allowed.
    return isinstance(entry_id, str) and (entry_id == fragment or entry_id == did + fragment)


def _clean_endpoint(value: Any) -> str | None:
    """An http(s) origin (scheme, host, optional port) without a trailing slash, else None."""
    if not isinstance(value, str) or len(value) > 2048:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username or parts.password or parts.query or parts.fragment:
        return None
    if parts.path not in ("", "/"):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def _parse_key_entry(entry: dict[str, Any]) -> PublicKey | None:
    value = entry.get("publicKeyMultibase")
    if not isinstance(value, str):
        return None
    key_type = entry.get("type")
    try:
        if key_type == "Multikey":
            return parse_multikey(value)
        legacy_curve = LEGACY_KEY_TYPES.get(key_type) if isinstance(key_type, str) else None
        if legacy_curve is not None:
            try:
                return parse_legacy_multibase(value, legacy_curve)
            except KeyFormatError:
                # Some legacy documents carry a codec-prefixed multikey under the old type name.
                key = parse_multikey(value)
                return key if key.curve == legacy_curve else None
    except KeyFormatError:
        return None
    return None


@dataclass
class DidDocument:
    """The atproto view of a DID document; `raw` keeps the whole document."""

    did: str
    handle: str | None
    pds_endpoint: str | None
    signing_key: PublicKey | None
    raw: dict[str, Any] = field(repr=False)

    def verification_key(self, fragment: str = "#atproto") -> PublicKey | None:
        """The first valid key whose id is `fragment` (e.g. "#atproto_label") and controller the DID."""
        methods = self.raw.get("verificationMethod")
        if not isinstance(methods, list):
            return None
        for entry in methods:
            if not isinstance(entry, dict) or not _matches_fragment(
                entry.get("id"), self.did, fragment
            ):
                continue
            if entry.get("controller") != self.did:
                continue
            key = _parse_key_entry(entry)
            if key is not None:
                return key
        return None

    def service_endpoint(self, fragment: str, service_type: str) -> str | None:
        """The endpoint of the first service with id `fragment` and type `service_type`."""
        services = self.raw.get("service")
        if not isinstance(services, list):
            return None
        for entry in services:
            if not isinstance(entry, dict) or not _matches_fragment(
                entry.get("id"), self.did, fragment
            ):
                continue
            if entry.get("type") != service_type:
                continue
            endpoint = _clean_endpoint(entry.get("serviceEndpoint"))
            if endpoint is not None:
                return endpoint
        return None


def parse_did_document(did: str, doc: dict[str, Any]) -> DidDocument:
    """Extract handle, PDS endpoint and signing key; the document's `id` must equal `did`.

    Missing or malformed parts become None (an account without them is broken, but its
    document is still a document); a document for another DID is an IdentityError.
    """
    if not isinstance(doc, dict):
        raise IdentityError(f"DID document for {did} is not a JSON object", kind="bad_document")
    if doc.get("id") != did:
        raise IdentityError(
            f"DID document id {str(doc.get('id'))[:200]!r} does not match {did}",
            kind="bad_document",
        )
    handle = None
    aka = doc.get("alsoKnownAs")
    if isinstance(aka, list):
        for uri in aka:
            # The first syntactically valid at:// handle is the claim; the rest are ignored.
            if isinstance(uri, str) and uri.startswith("at://"):
                handle = normalize_handle(uri[len("at://") :])
                if handle is not None:
                    break
    result = DidDocument(did=did, handle=handle, pds_endpoint=None, signing_key=None, raw=doc)
    result.pds_endpoint = result.service_endpoint("#atproto_pds", "AtprotoPersonalDataServer")
    result.signing_key = result.verification_key("#atproto")
    return result


def did_web_url(did: str, *, allow_private_network: bool = False) -> str:
    """The URL of a did:web document (hostname-level only, https).

    did:web:localhost (plain http, any port) only with `allow_private_network`, for tests and
    local development.
    """
    ident = did[len("did:web:") :]
    if ":" in ident:
        raise IdentityError(f"{did}: path-based did:web is not supported", kind="unsupported")
    host = unquote(ident)
    hostname, _, port = host.partition(":")
    hostname = hostname.lower()
    if hostname in _LOOPBACK_HOSTS:
        if not allow_private_network:
            raise IdentityError(
                f"{did}: did:web on localhost is refused (private networks are not allowed)",
                kind="unsupported",
            )
        if port and not port.isdigit():
            raise IdentityError(f"{did}: bad port", kind="invalid")
        return f"http://{host}/.well-known/did.json"
    if port or "%" in hostname or normalize_handle(hostname) is None:
        raise IdentityError(f"{did}: not a valid did:web hostname", kind="invalid")
    if has_disallowed_tld(hostname):
        raise IdentityError(f"{did}: hostname uses a disallowed TLD", kind="unsupported")
    return f"https://{hostname}/.well-known/did.json"


def plc_document_url(plc_url: str, did: str) -> str:
    """Where the PLC directory at `plc_url` serves the document of `did`."""
    if not PLC_DID_RE.fullmatch(did):
        raise IdentityError(f"{did}: not a valid did:plc identifier", kind="invalid")
    return f"{plc_url}/{did}"
