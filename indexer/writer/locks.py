"""Per-DID transaction locks: concurrent writers (the live indexer, a backfill) never interleave
on the same repo's records, so the state a batch reads stays exact until it commits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from core.db import Connection

# classid of the per-DID transaction locks (two-int advisory lock space); "plyw".
WRITER_LOCK_CLASS = 0x706C7977


def did_lock_key(did: str) -> int:
    """A signed 32-bit key for the per-DID transaction lock."""
    return int.from_bytes(hashlib.blake2b(did.encode(), digest_size=4).digest(), "big", signed=True)


async def lock_dids(conn: Connection, dids: Iterable[str]) -> None:
    # Sorted keys: two writers locking overlapping sets always lock in the same order.
    keys = sorted({did_lock_key(d) for d in dids})
    if keys:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1::int, k) FROM unnest($2::int[]) AS k",
            WRITER_LOCK_CLASS,
            keys,
        )
