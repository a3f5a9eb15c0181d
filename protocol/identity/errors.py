"""The one error identity lookups raise, with a machine-readable reason."""

from __future__ import annotations

from typing import Literal

from protocol.errors import ProtocolError

ErrorKind = Literal[
    "invalid", "unsupported", "not_found", "bad_document", "unreachable", "timeout", "too_large"
]


class IdentityError(ProtocolError):
    """A DID or handle could not be resolved; `kind` says why, the message says it for people."""

    def __init__(self, message: str, *, kind: ErrorKind = "unreachable") -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
