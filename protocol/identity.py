"""AT Protocol identity: DID document parsing, DID and handle resolution, bidirectional handles.

`parse_did_document` extracts what atproto needs from a DID document (claimed handle, PDS
endpoint, #atproto signing key, in both the current Multikey and the legacy key formats).
`IdentityResolver` fetches documents (did:plc from a PLC directory, did:web from the host's
/.well-known/did.json) and resolves handles (DNS TXT `_atproto.<handle>` and HTTPS
`/.well-known/atproto-did`, or a PDS's `com.atproto.identity.resolveHandle` when configured).

Every remote answer is treated as hostile: responses are size-limited and time-limited, results
are cached with a TTL (bounded in size), and concurrent lookups of the same key share one
request so a burst of events from one account costs one fetch. Unless PLYR_ALLOW_PRIVATE_NETWORK
is on, did:web and well-known handle lookups are https only (redirects included) and no request
reaches a loopback, private or otherwise non-public address (core/net.py), since a published DID
document or handle decides where we connect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
import orjson
from prometheus_client import Counter

from core.errors import ConfigError
from core.net import blocked_reason, guard_refusal, outbound_connector
from core.settings import ALLOW_PRIVATE_NETWORK_VAR
from core.settings import allow_private_network as private_network_allowed
from protocol.crypto import (
    LEGACY_KEY_TYPES,
    KeyFormatError,
    PublicKey,
    parse_legacy_multibase,
    parse_multikey,
)
from protocol.errors import ProtocolError

log = logging.getLogger("plyr.identity")

IDENTITY_LOOKUPS = Counter(
    "plyr_identity_lookups_total",
    "Identity lookups by kind (did, handle) and outcome (hit = served from cache).",
    ["kind", "outcome"],
)

ErrorKind = Literal[
    "invalid", "unsupported", "not_found", "bad_document", "unreachable", "timeout", "too_large"
]

# Syntax from the DID and handle specs (kept here so identity has no other protocol dependency).
_DID_RE = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")
_PLC_RE = re.compile(r"^did:plc:[a-z2-7]{24}$")
_HANDLE_RE = re.compile(
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
)
# TLDs that must always fail resolution (handle spec, "Additional Non-Syntax Restrictions").
_DISALLOWED_TLDS = frozenset(
    {"alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"}
)
_LOOPBACK_HOSTS = frozenset({"localhost"})

MAX_DOCUMENT_BYTES = 1_000_000
MAX_WELL_KNOWN_BYTES = 4096  # a DID is at most 2048 characters
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class IdentityError(ProtocolError):
    """A DID or handle could not be resolved; `kind` says why, the message says it for people."""

    def __init__(self, message: str, *, kind: ErrorKind = "unreachable") -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


def is_valid_did(value: str) -> bool:
    return isinstance(value, str) and len(value) <= 2048 and bool(_DID_RE.match(value))


def normalize_handle(value: str) -> str | None:
    """The lowercased handle when `value` has handle syntax, else None."""
    if not isinstance(value, str) or len(value) > 253 or not _HANDLE_RE.match(value):
        return None
    return value.lower()


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
                f"{did}: did:web on localhost is refused ({ALLOW_PRIVATE_NETWORK_VAR} is off)",
                kind="unsupported",
            )
        if port and not port.isdigit():
            raise IdentityError(f"{did}: bad port", kind="invalid")
        return f"http://{host}/.well-known/did.json"
    if port or "%" in hostname or normalize_handle(hostname) is None:
        raise IdentityError(f"{did}: not a valid did:web hostname", kind="invalid")
    if hostname.rsplit(".", 1)[-1] in _DISALLOWED_TLDS:
        raise IdentityError(f"{did}: hostname uses a disallowed TLD", kind="unsupported")
    return f"https://{hostname}/.well-known/did.json"


class _Entry:
    __slots__ = ("value", "fetched_at", "expires_at")

    def __init__(self, value: Any, fetched_at: float, expires_at: float) -> None:
        self.value = value
        self.fetched_at = fetched_at
        self.expires_at = expires_at


class _TtlCache:
    """A size-bounded map whose entries expire; oldest-inserted entries go first when full."""

    def __init__(self, max_entries: int) -> None:
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._max = max_entries

    def get(self, key: str) -> _Entry | None:
        return self._data.get(key)

    def put(self, key: str, entry: _Entry) -> None:
        self._data[key] = entry
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def pop(self, key: str) -> None:
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


class IdentityResolver:
    """Resolves DIDs to documents and handles to DIDs, with caching and request coalescing.

    `refresh_floor`: a `fresh=True` lookup is served from cache if the cached answer is younger
    than this many seconds, so a flood of bad signatures cannot turn into a flood of PLC requests.
    `negative_ttl`: how long "not found" answers are remembered.
    `allow_private_network`: None follows PLYR_ALLOW_PRIVATE_NETWORK (default off). On, it
    accepts did:web:localhost over plain http, http redirects, and loopback/private addresses:
    for development and tests only. A `session` passed in is used as given: guard it with
    `core.net.outbound_connector` (the resolver still applies its https rules).
    """

    def __init__(
        self,
        plc_url: str = "https://plc.directory",
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 5.0,
        cache_ttl: float = 3600,
        handle_resolver_url: str | None = None,
        negative_ttl: float = 60,
        refresh_floor: float = 5.0,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
        max_cache_entries: int = 100_000,
        allow_private_network: bool | None = None,
        dns_resolver: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plc_url = plc_url.rstrip("/")
        self.handle_resolver_url = handle_resolver_url.rstrip("/") if handle_resolver_url else None
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.negative_ttl = negative_ttl
        self.refresh_floor = refresh_floor
        self.max_document_bytes = max_document_bytes
        self.allow_private_network = (
            private_network_allowed() if allow_private_network is None else allow_private_network
        )
        self._session = session
        self._own_session = session is None
        self._dns_resolver = dns_resolver
        self._clock = clock
        self._docs = _TtlCache(max_cache_entries)
        self._handles = _TtlCache(max_cache_entries)
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    # ---- lifecycle ----

    async def __aenter__(self) -> IdentityResolver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this resolver created it."""
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._own_session else self._session

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=outbound_connector(
                    allow_private_network=self.allow_private_network, limit=100, ttl_dns_cache=300
                ),
                headers={"User-Agent": "plyr-appview (identity resolver)"},
            )
            self._own_session = True
        return self._session

    # ---- caching and coalescing ----

    def invalidate(self, did: str) -> None:
        """Forget the cached document of `did` (the next lookup fetches it)."""
        self._docs.pop(did)

    def invalidate_handle(self, handle: str) -> None:
        self._handles.pop(handle.lower())

    def _cached(self, cache: _TtlCache, key: str, fresh: bool) -> _Entry | None:
        entry = cache.get(key)
        if entry is None:
            return None
        now = self._clock()
        if fresh:
            return entry if now - entry.fetched_at < self.refresh_floor else None
        return entry if now < entry.expires_at else None

    async def _coalesced(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run `make()` once for all concurrent callers asking for `key`."""
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(make())
            self._inflight[key] = fut

            def _done(f: asyncio.Future[Any], key: str = key) -> None:
                if self._inflight.get(key) is f:
                    del self._inflight[key]
                if not f.cancelled():
                    f.exception()  # mark retrieved even if every caller went away

            fut.add_done_callback(_done)
        # shield: one caller being cancelled must not cancel the lookup the others wait on.
        return await asyncio.shield(fut)

    # ---- DIDs ----

    async def resolve_did(self, did: str, *, fresh: bool = False) -> DidDocument:
        """The parsed DID document of `did` (did:plc or did:web). Raises IdentityError."""
        if not is_valid_did(did):
            raise IdentityError(f"{str(did)[:100]!r} is not a valid DID", kind="invalid")
        if not (did.startswith("did:plc:") or did.startswith("did:web:")):
            raise IdentityError(f"{did}: unsupported DID method", kind="unsupported")
        entry = self._cached(self._docs, did, fresh)
        if entry is not None:
            IDENTITY_LOOKUPS.labels("did", "hit").inc()
            if isinstance(entry.value, IdentityError):
                raise IdentityError(str(entry.value), kind=entry.value.kind)
            return entry.value
        return await self._coalesced("did " + did, lambda: self._fetch_did(did))

    async def _fetch_did(self, did: str) -> DidDocument:
        stale = self._docs.get(did)
        try:
            doc = await self._fetch_did_document(did)
        except IdentityError as exc:
            IDENTITY_LOOKUPS.labels("did", exc.kind).inc()
            now = self._clock()
            if exc.kind == "not_found":
                self._docs.put(did, _Entry(exc, now, now + self.negative_ttl))
            elif stale is not None and isinstance(stale.value, DidDocument):
                # The directory is down or slow: keep serving the last good document (for a
                # short while before asking again) rather than failing every event of the account.
                log.warning(
                    "DID resolution failed; serving the cached document",
                    extra={"did": did, "error": str(exc)},
                )
                stale.expires_at = now + self.negative_ttl
                return stale.value
            raise
        IDENTITY_LOOKUPS.labels("did", "fetched").inc()
        now = self._clock()
        self._docs.put(did, _Entry(doc, now, now + self.cache_ttl))
        return doc

    async def _fetch_did_document(self, did: str) -> DidDocument:
        if did.startswith("did:plc:"):
            if not _PLC_RE.match(did):
                raise IdentityError(f"{did}: not a valid did:plc identifier", kind="invalid")
            url = f"{self.plc_url}/{did}"
        else:
            url = did_web_url(did, allow_private_network=self.allow_private_network)
        status, body = await self._get(url, limit=self.max_document_bytes, redirects=0, what=did)
        if status in (404, 410):
            # PLC answers 410 for tombstoned DIDs.
            raise IdentityError(
                f"{did}: DID not found (HTTP {status} from {url})", kind="not_found"
            )
        if status != 200:
            raise IdentityError(f"{did}: HTTP {status} from {url}", kind="unreachable")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise IdentityError(
                f"{did}: DID document is not valid JSON", kind="bad_document"
            ) from None
        return parse_did_document(did, doc)

    async def signing_key(self, did: str, *, fresh: bool = False) -> PublicKey:
        """The #atproto signing key of `did`; IdentityError when the document has none."""
        doc = await self.resolve_did(did, fresh=fresh)
        if doc.signing_key is None:
            raise IdentityError(
                f"{did}: DID document has no valid #atproto signing key", kind="bad_document"
            )
        return doc.signing_key

    # ---- HTTP ----

    async def _get(self, url: str, *, limit: int, redirects: int, what: str) -> tuple[int, bytes]:
        """GET `url`; returns (status, body). The body is read only for 2xx and capped at `limit`.

        Up to `redirects` redirects are followed, each target checked by `_redirect_target`.
        """
        session = self._http()
        try:
            async with asyncio.timeout(self.timeout):
                for _hop in range(redirects + 1):
                    async with session.get(
                        url,
                        allow_redirects=False,
                        headers={
                            "Accept": "application/did+ld+json, application/json, text/plain;q=0.9, */*;q=0.1"
                        },
                    ) as resp:
                        if redirects and resp.status in _REDIRECT_STATUSES:
                            url = self._redirect_target(resp, what)
                            continue
                        if not 200 <= resp.status < 300:
                            return resp.status, b""
                        if resp.content_length is not None and resp.content_length > limit:
                            raise IdentityError(
                                f"{what}: response from {url} is too large ({resp.content_length} bytes)",
                                kind="too_large",
                            )
                        body = bytearray()
                        async for chunk in resp.content.iter_chunked(65536):
                            body += chunk
                            if len(body) > limit:
                                raise IdentityError(
                                    f"{what}: response from {url} exceeds {limit} bytes",
                                    kind="too_large",
                                )
                        return resp.status, bytes(body)
                raise IdentityError(f"{what}: more than {redirects} redirects", kind="unreachable")
        except TimeoutError:
            raise IdentityError(
                f"{what}: {url} did not answer within {self.timeout:g}s", kind="timeout"
            ) from None
        except aiohttp.ClientError as exc:
            refused = guard_refusal(exc)
            if refused is not None:
                # Not transient: the document or handle names an address we never fetch from.
                raise IdentityError(
                    f"{what}: {url}: {refused.strerror}", kind="unsupported"
                ) from None
            raise IdentityError(
                f"{what}: cannot reach {url}: {exc.__class__.__name__}: {exc}", kind="unreachable"
            ) from None

    def _redirect_target(self, resp: aiohttp.ClientResponse, what: str) -> str:
        """Where a redirect points; https only unless private networks are allowed (an http hop
        would let anyone on the path answer for the handle)."""
        location = resp.headers.get("Location")
        if not location:
            raise IdentityError(
                f"{what}: redirect from {resp.url} without a Location", kind="unreachable"
            )
        target = urljoin(str(resp.url), location)
        try:
            parts = urlsplit(target)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            parts = None
        allowed = ("http", "https") if self.allow_private_network else ("https",)
        if (
            parts is None
            or parts.scheme not in allowed
            or not parts.hostname
            or parts.username is not None
            or parts.password is not None
        ):
            raise IdentityError(
                f"{what}: redirect from {resp.url} to {target[:200]!r} is refused "
                f"(only {' or '.join(allowed)}, without credentials)",
                kind="unsupported",
            )
        return target

    # ---- handles ----

    async def resolve_handle(self, handle: str, *, fresh: bool = False) -> str | None:
        """The DID that `handle` points to, or None when it does not resolve (for any reason).

        This alone proves nothing about the account: use `verified_handle` to display a handle.
        """
        normalized = normalize_handle(handle)
        if normalized is None or normalized.rsplit(".", 1)[-1] in _DISALLOWED_TLDS:
            return None
        entry = self._cached(self._handles, normalized, fresh)
        if entry is not None:
            IDENTITY_LOOKUPS.labels("handle", "hit").inc()
            return entry.value
        return await self._coalesced("handle " + normalized, lambda: self._fetch_handle(normalized))

    async def _fetch_handle(self, handle: str) -> str | None:
        if self.handle_resolver_url:
            did = await self._resolve_handle_xrpc(handle)
        else:
            did = await self._resolve_handle_direct(handle)
        now = self._clock()
        ttl = self.cache_ttl if did is not None else self.negative_ttl
        self._handles.put(handle, _Entry(did, now, now + ttl))
        IDENTITY_LOOKUPS.labels("handle", "resolved" if did else "unresolved").inc()
        return did

    async def _resolve_handle_xrpc(self, handle: str) -> str | None:
        url = f"{self.handle_resolver_url}/xrpc/com.atproto.identity.resolveHandle?handle={handle}"
        try:
            status, body = await self._get(
                url, limit=MAX_WELL_KNOWN_BYTES * 2, redirects=0, what=handle
            )
        except IdentityError as exc:
            log.info("handle resolution failed", extra={"handle": handle, "error": str(exc)})
            return None
        if status != 200:
            return None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        did = data.get("did") if isinstance(data, dict) else None
        return did if isinstance(did, str) and is_valid_did(did) else None

    async def _resolve_handle_direct(self, handle: str) -> str | None:
        # Both methods at once; DNS wins when it answers (the spec prefers it on conflict).
        dns_task = asyncio.ensure_future(self._resolve_handle_dns(handle))
        http_task = asyncio.ensure_future(self._resolve_handle_well_known(handle))
        try:
            did = await dns_task
            if did is not None:
                return did
            return await http_task
        finally:
            for task in (dns_task, http_task):
                if not task.done():
                    task.cancel()

    async def _resolve_handle_dns(self, handle: str) -> str | None:
        try:
            import dns.asyncresolver
            import dns.exception
        except ImportError:  # dnspython is optional; the HTTPS method still works
            return None
        name = f"_atproto.{handle}"
        if len(name) > 253:
            return None
        try:
            if self._dns_resolver is None:
                # Reads /etc/resolv.conf once; reused for every lookup.
                self._dns_resolver = dns.asyncresolver.Resolver()
            resolver = self._dns_resolver
            answer = await resolver.resolve(
                name, "TXT", lifetime=self.timeout, raise_on_no_answer=False
            )
        except dns.exception.DNSException:
            return None
        except OSError:  # e.g. no resolv.conf
            return None
        values = []
        for rdata in answer.rrset or ():
            values.append(b"".join(rdata.strings).decode("ascii", "replace"))
        return did_from_txt_records(values)

    async def _resolve_handle_well_known(self, handle: str) -> str | None:
        url = f"https://{handle}/.well-known/atproto-did"
        try:
            status, body = await self._get(
                url, limit=MAX_WELL_KNOWN_BYTES, redirects=5, what=handle
            )
        except IdentityError:
            return None
        if not 200 <= status < 300:
            return None
        return did_from_well_known(body)

    async def verified_handle(self, did: str) -> str | None:
        """The handle of `did` if its document claims it AND the handle resolves back to `did`.

        None when either direction fails (including when the DID cannot be resolved).
        """
        try:
            doc = await self.resolve_did(did)
        except IdentityError as exc:
            log.info("cannot verify handle", extra={"did": did, "error": str(exc)})
            return None
        if doc.handle is None:
            return None
        resolved = await self.resolve_handle(doc.handle)
        return doc.handle if resolved == did else None


def did_from_txt_records(values: list[str]) -> str | None:
    """The DID from `_atproto` TXT record values: exactly one distinct `did=` value, else None."""
    dids = {v[len("did=") :].strip() for v in values if v.startswith("did=")}
    if len(dids) != 1:
        return None
    did = dids.pop()
    return did if is_valid_did(did) else None


def did_from_well_known(body: bytes) -> str | None:
    """The DID in a `/.well-known/atproto-did` body (surrounding whitespace tolerated), else None."""
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return text if is_valid_did(text) else None


def resolver_from_env(*, session: aiohttp.ClientSession | None = None) -> IdentityResolver:
    """A resolver configured by PLYR_PLC_URL, PLYR_HANDLE_RESOLVER_URL and
    PLYR_ALLOW_PRIVATE_NETWORK.

    A directory or resolver URL naming localhost or a non-public IP while private networks are
    refused is a ConfigError now rather than a refused request on every lookup later.
    """
    from core.settings import env_str

    allow_private = private_network_allowed()
    plc_url = env_str("PLYR_PLC_URL", "https://plc.directory") or "https://plc.directory"
    handle_resolver_url = env_str("PLYR_HANDLE_RESOLVER_URL")
    if not allow_private:
        for name, value in (
            ("PLYR_PLC_URL", plc_url),
            ("PLYR_HANDLE_RESOLVER_URL", handle_resolver_url),
        ):
            reason = _non_public_literal(value) if value else None
            if reason is not None:
                raise ConfigError(
                    f"{name}={value} is {reason} address, which outbound requests refuse; "
                    f"set {ALLOW_PRIVATE_NETWORK_VAR}=true for a local PLC or PDS (development only)"
                )
    return IdentityResolver(
        plc_url,
        session=session,
        handle_resolver_url=handle_resolver_url,
        allow_private_network=allow_private,
    )


def _non_public_literal(url: str) -> str | None:
    """Why the host of `url` is not public when that shows without DNS (localhost, an IP)."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "a loopback"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: the connector checks what it resolves to
    return blocked_reason(host)
