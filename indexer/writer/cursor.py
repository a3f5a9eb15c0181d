"""The stream's cursor rows: where each source stands, written in the batch's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core.db import Connection


@dataclass(slots=True)
class CursorUpdate:
    """Where a stream stands after this batch. `expected` fences a consumer that lost its lock:
    when given, the stored seq must still equal it (or be absent), else CursorConflict."""

    source: str
    seq: int
    event_time: datetime | None = None
    expected: int | None = None


class CursorConflict(Exception):
    """The stored cursor moved under us: another consumer owns the stream now."""


async def write_cursor(conn: Connection, cursor: CursorUpdate) -> None:
    """Upsert the cursor row; with `expected`, refuse to move a cursor someone else moved."""
    if cursor.expected is None:
        await conn.execute(
            """INSERT INTO cursors (source, seq, event_time) VALUES ($1, $2, $3)
               ON CONFLICT (source) DO UPDATE SET seq = excluded.seq,
                 event_time = excluded.event_time, updated_at = now()""",
            cursor.source,
            cursor.seq,
            cursor.event_time,
        )
        return
    # One round trip: the upsert locks the row and moves it only from `expected`.
    moved = await conn.fetchval(
        """INSERT INTO cursors (source, seq, event_time) VALUES ($1, $2, $3)
           ON CONFLICT (source) DO UPDATE SET seq = excluded.seq,
             event_time = excluded.event_time, updated_at = now()
           WHERE cursors.seq = $4
           RETURNING true""",
        cursor.source,
        cursor.seq,
        cursor.event_time,
        cursor.expected,
    )
    if moved is None:
        stored = await read_cursor(conn, cursor.source)
        raise CursorConflict(
            f"cursor {cursor.source} is at {stored}, expected {cursor.expected}: another consumer owns it"
        )


async def read_cursor(conn: Connection | asyncpg.Pool, source: str) -> int | None:
    return await conn.fetchval("SELECT seq FROM cursors WHERE source = $1", source)
