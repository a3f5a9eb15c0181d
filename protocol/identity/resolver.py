"""`IdentityResolver`: DIDs to documents and handles to DIDs, cached, with shared requests.

did:plc documents come from a PLC directory, did:web ones from the host's
/.well-known/did.json; handles resolve by DNS TXT and HTTPS well-known (or through a PDS's
`com.atproto.identity.resolveHandle` when configured). Answers are cached with a TTL (bounded
in size), failures briefly; concurrent lookups of one key share one request.

Everything is configured by the caller (directory URL, timeouts, cache sizes, whether private
networks are allowed, the HTTP session or the connector to build one with): this layer reads no
environment. Without `allow_private_network`, did:web and well-known lookups are https only
(redirects included); which addresses may be reached is the connector's rule, so a resolver
that refuses private networks must be given a guarded session or connector.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from prometheus_client import Counter

from protocol.crypto import PublicKey
from protocol.identity.cache import CacheEntry, Coalescer, TtlCache
from protocol.identity.documents import (
    DidDocument,
    did_web_url,
    has_disallowed_tld,
    is_valid_did,
    normalize_handle,
    parse_did_document,
    plc_document_url,
)
from protocol.identity.errors import IdentityError
from protocol.identity.fetch import Fetcher, RefusalReason, no_refusals
from protocol.identity.handles import DnsTxtLookup, via_dns_or_well_known, via_xrpc

log = logging.getLogger("plyr.identity")

IDENTITY_LOOKUPS = Counter(
    "plyr_identity_lookups_total",
    "Identity lookups by kind (did, handle) and outcome (hit = served from cache).",
    ["kind", "outcome"],
)

DEFAULT_PLC_URL = "https://plc.directory"
MAX_DOCUMENT_BYTES = 1_000_000
USER_AGENT = "plyr-appview (identity resolver)"


class IdentityResolver:
    """Resolves DIDs to documents and handles to DIDs, with caching and request coalescing.

    `refresh_floor`: a `fresh=True` lookup is served from cache if the cached answer is younger
    than this many seconds, so a flood of bad signatures cannot turn into a flood of PLC requests.
    `negative_ttl`: how long "not found" answers are remembered.
    `allow_private_network`: accept did:web:localhost over plain http and http redirects (for
    development and tests only).
    `session`: used as given and never closed here. Without one, the resolver makes its own on
    first use with `connector()`; a plain connector is only allowed with `allow_private_network`.
    `refusal_reason`: recognises the connector's refusal of an address (see fetch.py).
    """

    def __init__(
        self,
        plc_url: str = DEFAULT_PLC_URL,
        *,
        session: aiohttp.ClientSession | None = None,
        connector: Callable[[], aiohttp.BaseConnector] | None = None,
        refusal_reason: RefusalReason = no_refusals,
        timeout: float = 5.0,
        cache_ttl: float = 3600,
        handle_resolver_url: str | None = None,
        negative_ttl: float = 60,
        refresh_floor: float = 5.0,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
        max_cache_entries: int = 100_000,
        allow_private_network: bool = False,
        dns_resolver: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if session is None and connector is None and not allow_private_network:
            raise ValueError(
                "an identity resolver that refuses private networks needs a guarded session or "
                "connector (core.identity builds one)"
            )
        self.plc_url = plc_url.rstrip("/")
        self.handle_resolver_url = handle_resolver_url.rstrip("/") if handle_resolver_url else None
        self.cache_ttl = cache_ttl
        self.negative_ttl = negative_ttl
        self.refresh_floor = refresh_floor
        self.max_document_bytes = max_document_bytes
        self.allow_private_network = allow_private_network
        self._session = session
        self._own_session = session is None
        self._connector = connector
        self._clock = clock
        self._docs = TtlCache(max_cache_entries)
        self._handles = TtlCache(max_cache_entries)
        self._coalescer = Coalescer()
        self._fetcher = Fetcher(
            self._http,
            timeout=timeout,
            allow_private_network=allow_private_network,
            user_agent=USER_AGENT,
            refusal_reason=refusal_reason,
        )
        self._dns = DnsTxtLookup(dns_resolver, timeout=timeout)

    @property
    def timeout(self) -> float:
        """Seconds each lookup may take (one deadline for the HTTP exchange, or for DNS)."""
        return self._fetcher.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._fetcher.timeout = self._dns.timeout = seconds

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
            connector = (
                self._connector()
                if self._connector is not None
                else aiohttp.TCPConnector(limit=100, ttl_dns_cache=300)
            )
            self._session = aiohttp.ClientSession(connector=connector)
            self._own_session = True
        return self._session

    async def _get(self, url: str, *, limit: int, redirects: int, what: str) -> tuple[int, bytes]:
        return await self._fetcher.get(url, limit=limit, redirects=redirects, what=what)

    # ---- caching ----

    def invalidate(self, did: str) -> None:
        """Forget the cached document of `did` (the next lookup fetches it)."""
        self._docs.pop(did)

    def invalidate_handle(self, handle: str) -> None:
        self._handles.pop(handle.lower())

    def _cached(self, cache: TtlCache, key: str, fresh: bool) -> CacheEntry | None:
        entry = cache.get(key)
        if entry is None:
            return None
        now = self._clock()
        if fresh:
            return entry if now - entry.fetched_at < self.refresh_floor else None
        return entry if now < entry.expires_at else None

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
        return await self._coalescer.run("did " + did, lambda: self._fetch_did(did))

    async def _fetch_did(self, did: str) -> DidDocument:
        stale = self._docs.get(did)
        try:
            doc = await self._fetch_did_document(did)
        except IdentityError as exc:
            IDENTITY_LOOKUPS.labels("did", exc.kind).inc()
            now = self._clock()
            if exc.kind == "not_found":
                self._docs.put(did, CacheEntry(exc, now, now + self.negative_ttl))
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
        self._docs.put(did, CacheEntry(doc, now, now + self.cache_ttl))
        return doc

    async def _fetch_did_document(self, did: str) -> DidDocument:
        if did.startswith("did:plc:"):
            url = plc_document_url(self.plc_url, did)
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

    # ---- handles ----

    async def resolve_handle(self, handle: str, *, fresh: bool = False) -> str | None:
        """The DID that `handle` points to, or None when it does not resolve (for any reason).

        This alone proves nothing about the account: use `verified_handle` to display a handle.
        """
        normalized = normalize_handle(handle)
        if normalized is None or has_disallowed_tld(normalized):
            return None
        entry = self._cached(self._handles, normalized, fresh)
        if entry is not None:
            IDENTITY_LOOKUPS.labels("handle", "hit").inc()
            return entry.value
        return await self._coalescer.run(
            "handle " + normalized, lambda: self._fetch_handle(normalized)
        )

    async def _fetch_handle(self, handle: str) -> str | None:
        if self.handle_resolver_url:
            did = await via_xrpc(self._fetcher, self.handle_resolver_url, handle)
        else:
            did = await via_dns_or_well_known(self._dns, self._fetcher, handle)
        now = self._clock()
        ttl = self.cache_ttl if did is not None else self.negative_ttl
        self._handles.put(handle, CacheEntry(did, now, now + ttl))
        IDENTITY_LOOKUPS.labels("handle", "resolved" if did else "unresolved").inc()
        return did

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
