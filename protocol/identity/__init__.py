"""AT Protocol identity: DID documents, DID and handle resolution, bidirectional handles.

- `documents`: what atproto reads from a DID document (handle, PDS endpoint, keys);
- `resolver`: `IdentityResolver`, fetching documents and handles with caching;
- `handles`: the handle lookup methods (DNS TXT, HTTPS well-known, XRPC);
- `fetch`: the bounded HTTP GET every lookup goes through; `cache`: TTL cache and coalescing;
- `interface`: `IdentityResolving`, what services ask of a resolver (real or fake).

This layer reads no environment: whoever builds a resolver configures it (core/identity.py).
"""

from typing import TYPE_CHECKING, Any

from protocol.identity.documents import (
    DidDocument,
    did_web_url,
    is_valid_did,
    normalize_handle,
    parse_did_document,
)
from protocol.identity.errors import ErrorKind, IdentityError
from protocol.identity.interface import IdentityResolving

if TYPE_CHECKING:
    from protocol.identity.handles import did_from_txt_records, did_from_well_known
    from protocol.identity.resolver import (
        DEFAULT_PLC_URL,
        IDENTITY_LOOKUPS,
        MAX_DOCUMENT_BYTES,
        IdentityResolver,
    )

# The resolver (and aiohttp under it) is imported when first asked for: code that only needs
# the interface or the documents (a capture replay, `plyr --help`) does not pay for it.
_FROM_RESOLVER = ("DEFAULT_PLC_URL", "IDENTITY_LOOKUPS", "MAX_DOCUMENT_BYTES", "IdentityResolver")
_FROM_HANDLES = ("did_from_txt_records", "did_from_well_known")


def __getattr__(name: str) -> Any:
    if name in _FROM_RESOLVER:
        from protocol.identity import resolver

        return getattr(resolver, name)
    if name in _FROM_HANDLES:
        from protocol.identity import handles

        return getattr(handles, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_PLC_URL",
    "IDENTITY_LOOKUPS",
    "MAX_DOCUMENT_BYTES",
    "DidDocument",
    "ErrorKind",
    "IdentityError",
    "IdentityResolver",
    "IdentityResolving",
    "did_from_txt_records",
    "did_from_well_known",
    "did_web_url",
    "is_valid_did",
    "normalize_handle",
    "parse_did_document",
]
