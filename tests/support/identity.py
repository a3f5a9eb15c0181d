"""Identity resolvers for tests: a real one for the local fake PLC/PDS servers, and one fake.

`local_resolver` is the real `IdentityResolver`, allowed to reach loopback (where the test
servers listen). `FakeResolver` answers from memory, for tests about something else than the
network. (tests/support/stub_resolver.py is another thing: a DNS stand-in for connectors.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from protocol.crypto import PublicKey
from protocol.identity import DidDocument, ErrorKind, IdentityError, IdentityResolver


def local_resolver(plc_url: str, **options: Any) -> IdentityResolver:
    """A real resolver for servers on this machine (private networks allowed)."""
    return IdentityResolver(plc_url, allow_private_network=True, **options)


class FakeResolver:
    """Satisfies `protocol.identity.IdentityResolving` from memory; never touches the network.

    `keys`: DID -> #atproto signing key (an unknown DID raises IdentityError of `error_kind`);
    `rotated`: DID -> a newer key, served only to fresh lookups (a key rotation);
    `handles`: DID -> its verified handle; a DID in `failing` raises OSError there (the
    directory is down); `during(did)`, when set, is awaited inside each handle lookup.
    What was asked is recorded: `calls` (signing_key: did, fresh), `fetches` (resolve_did
    count), `lookups` (verified_handle DIDs), `invalidated`.
    """

    def __init__(
        self, keys: dict[str, Any] | None = None, *, handles: dict[str, str | None] | None = None
    ) -> None:
        self.keys: dict[str, Any] = keys if keys is not None else {}
        self.rotated: dict[str, Any] = {}
        self.handles: dict[str, str | None] = handles if handles is not None else {}
        self.failing: set[str] = set()
        self.during: Callable[[str], Awaitable[None]] | None = None
        self.error_kind: ErrorKind = "not_found"
        self.calls: list[tuple[str, bool]] = []
        self.fetches = 0
        self.lookups: list[str] = []
        self.invalidated: list[str] = []

    def _key(self, did: str, fresh: bool) -> Any:
        if fresh and did in self.rotated:
            return self.rotated[did]
        if did not in self.keys:
            raise IdentityError(f"{did}: not found", kind=self.error_kind)
        return self.keys[did]

    async def resolve_did(self, did: str, *, fresh: bool = False) -> DidDocument:
        self.fetches += 1
        key = self._key(did, fresh)
        return DidDocument(did=did, handle=self.handles.get(did), pds_endpoint=None, signing_key=key, raw={})

    async def signing_key(self, did: str, *, fresh: bool = False) -> PublicKey:
        self.calls.append((did, fresh))
        return self._key(did, fresh)  # type: ignore[no-any-return]

    async def resolve_handle(self, handle: str, *, fresh: bool = False) -> str | None:
        wanted = handle.lower()
        return next((did for did, h in self.handles.items() if h == wanted), None)

    async def verified_handle(self, did: str) -> str | None:
        self.lookups.append(did)
        if self.during is not None:
            await self.during(did)
        if did in self.failing:
            raise OSError("PLC unreachable")
        return self.handles.get(did)

    def invalidate(self, did: str) -> None:
        self.invalidated.append(did)

    async def close(self) -> None:
        return None
