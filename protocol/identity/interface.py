"""What code that needs identities asks of a resolver: the real `IdentityResolver` and the
test fakes both satisfy this, so services take any of them."""

from __future__ import annotations

from typing import Protocol

from protocol.crypto import PublicKey
from protocol.identity.documents import DidDocument


class IdentityResolving(Protocol):
    async def resolve_did(self, did: str, *, fresh: bool = False) -> DidDocument:
        """The DID document of `did`; raises IdentityError."""
        ...

    async def signing_key(self, did: str, *, fresh: bool = False) -> PublicKey:
        """The #atproto signing key of `did`; raises IdentityError."""
        ...

    async def resolve_handle(self, handle: str, *, fresh: bool = False) -> str | None:
        """The DID `handle` points to, or None."""
        ...

    async def verified_handle(self, did: str) -> str | None:
        """The handle of `did` when both directions agree, else None."""
        ...

    def invalidate(self, did: str) -> None:
        """Forget what is cached about `did`."""
        ...

    async def close(self) -> None:
        """Release what the resolver holds (its own HTTP session)."""
        ...
