"""Record keys for tests: readable names turned into the TIDs our lexicons require."""

from __future__ import annotations

import hashlib

from protocol.syntax import tid_from_micros

_BASE_MICROS = 1_700_000_000_000_000


def tid_key(name: str) -> str:
    """A valid TID record key, the same for the same name (so tests can name records "t1")."""
    if name == "self":
        return name
    offset = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=5).digest(), "big")
    return tid_from_micros(_BASE_MICROS + offset)
