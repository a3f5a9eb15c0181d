"""Writing records into the index the way the indexer does, for tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from indexer.records import RecordOp
from indexer.writer import BatchResult, apply_batch, default_lexicons


async def index_records(
    pool: asyncpg.Pool, ops: Sequence[RecordOp], *, lexicons: Any = None, source: str = "seed"
) -> BatchResult:
    """Apply ops through the writer."""
    async with pool.acquire() as conn:
        return await apply_batch(conn, ops, lexicons=lexicons or default_lexicons(), source=source)
