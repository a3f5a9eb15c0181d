"""Dead letters: what could not be indexed, with why, stored once per record version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from core.db import Connection


@dataclass(slots=True)
class DeadLetter:
    """Something that could not be indexed, with why (frame-level failures carry `raw`)."""

    reason: str
    seq: int | None = None
    uri: str | None = None
    did: str | None = None
    collection: str | None = None
    rev: str | None = None
    cid: str | None = None
    record: dict[str, Any] | None = None
    raw: bytes | None = None


# A record version already waiting in dead_letters is not stored again (a backfill or a replayed
# stream meets the same invalid version many times).
_INSERT_DEAD_LETTERS = """
INSERT INTO dead_letters (source, seq, uri, did, collection, rev, cid, reason, record, raw)
SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::jsonb[], $10::bytea[])
  AS d(seq, uri, did, collection, rev, cid, reason, record, raw)
WHERE d.uri IS NULL OR d.cid IS NULL OR NOT EXISTS (
  SELECT 1 FROM dead_letters x
  WHERE x.uri = d.uri AND x.cid = d.cid AND x.replayed_at IS NULL)
"""


async def insert_dead_letters(
    conn: Connection, source: str, letters: Sequence[DeadLetter]
) -> int:
    """Store `letters`; returns how many rows were written (versions already waiting are not)."""
    # One letter per record version within the batch too (the statement skips stored ones).
    seen: set[tuple[str, str]] = set()
    unique: list[DeadLetter] = []
    for d in letters:
        if d.uri is not None and d.cid is not None:
            if (d.uri, d.cid) in seen:
                continue
            seen.add((d.uri, d.cid))
        unique.append(d)
    letters = unique
    if not letters:
        return 0
    records: list[Any] = []
    raws: list[bytes | None] = []
    for d in letters:
        if d.record is not None and jsonb_problem(d.record) is not None:
            # jsonb cannot hold it either: keep it as JSON bytes when it encodes at all.
            records.append(None)
            try:
                raws.append(d.raw if d.raw is not None else orjson.dumps(d.record))
            except TypeError:
                raws.append(d.raw)
        else:
            records.append(d.record)
            raws.append(d.raw)
    status = await conn.execute(
        _INSERT_DEAD_LETTERS,
        source,
        [d.seq for d in letters],
        [_clean_text(d.uri) for d in letters],
        [_clean_text(d.did) for d in letters],
        [_clean_text(d.collection) for d in letters],
        [_clean_text(d.rev) for d in letters],
        [_clean_text(d.cid) for d in letters],
        [_clean_text(d.reason) for d in letters],
        records,
        raws,
    )
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"


def _clean_text(value: Any) -> str | None:
    """Text for a dead-letter column: Postgres text cannot hold NUL."""
    if value is None:
        return None
    return str(value).replace("\x00", "\\0")


def jsonb_problem(record: Any) -> str | None:
    """Why a dead letter's record cannot go in its jsonb column, or None when it can."""
    try:
        encoded = orjson.dumps(record)
    except TypeError as exc:  # nesting beyond orjson's limit, or a non-JSON value
        return f"record cannot be encoded as JSON ({exc})"
    if b"\\u0000" in encoded:
        return "record contains U+0000 (NUL), which jsonb cannot hold"
    return None
