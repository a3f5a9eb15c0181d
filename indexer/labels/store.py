"""Writing what a labeler sent: labels, refusals, account takedowns and the cursor, in one
transaction per batch of frames (the cursor never passes a label that was not committed).

This module owns `labels`, `label_cursors` and `label_rejects`; `actors.moderation_takedown`
belongs to the writer (indexer/writer/accounts.py), called here inside the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from core.db import Connection
from indexer.labels.rules import ACCOUNT_TAKEDOWN_VALUES, LabelRow, newest
from indexer.writer import CursorConflict, apply_moderation_takedowns, lock_dids

# label_rejects keeps about this many rows (the newest): a hostile labeler cannot fill the disk.
MAX_REJECTS = 10_000
_TAKEDOWN_VALUES = sorted(ACCOUNT_TAKEDOWN_VALUES)

_STORED = """
SELECT uri, val, cts, seq FROM labels
WHERE src = $1 AND (uri, val) IN (SELECT * FROM unnest($2::text[], $3::text[]))
"""

# The WHERE repeats rules.newest's order: a row is only ever replaced by a newer one.
_UPSERT = """
INSERT INTO labels (uri, src, val, cid, neg, cts, exp, sig, view, seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[],
                     $6::timestamptz[], $7::timestamptz[], $8::bytea[], $9::jsonb[], $10::bigint[])
ON CONFLICT (uri, src, val) DO UPDATE SET
  cid = excluded.cid, neg = excluded.neg, cts = excluded.cts, exp = excluded.exp,
  sig = excluded.sig, view = excluded.view, seq = excluded.seq, received_at = now()
WHERE (labels.cts, labels.seq) < (excluded.cts, excluded.seq)
"""

# Which of these accounts an active `!takedown`/`!suspend` of a moderation labeler holds down
# (the labels_removing index answers it).
_TAKEDOWN_STATES = """
SELECT d.did, EXISTS (
  SELECT 1 FROM labels l
  WHERE l.uri = d.did AND l.src = ANY($2::text[]) AND l.val = ANY($3::text[])
    AND NOT l.neg AND (l.exp IS NULL OR l.exp > now())
) AS down
FROM unnest($1::text[]) AS d(did)
"""

_TRIM_REJECTS = "DELETE FROM label_rejects WHERE id <= (SELECT max(id) FROM label_rejects) - $1"


@dataclass(slots=True)
class Reject:
    """Something refused: `reason` is a kind from a small fixed set (a metric label), `detail`
    says what exactly; `label` is the label's JSON form when it decoded."""

    reason: str
    detail: str
    seq: int | None = None
    label: dict[str, Any] | None = None


@dataclass(slots=True)
class StoreResult:
    applied: int = 0
    stale: int = 0
    takedowns: dict[str, str] = field(default_factory=dict)  # did -> outcome, changes only


def _clean(text: str) -> str:
    # Postgres text and jsonb refuse U+0000; what a labeler sends may carry it.
    return text.replace("\x00", "\\u0000")


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


async def read_label_cursor(conn: Connection | asyncpg.Pool, src: str) -> int | None:
    return await conn.fetchval("SELECT cursor FROM label_cursors WHERE src = $1", src)


async def write_label_cursor(conn: Connection, src: str, cursor: int, expected: int | None) -> None:
    """Upsert the labeler's cursor, only from `expected` (None: no row yet): a subscriber that
    lost the service lock to another process cannot move it (CursorConflict)."""
    moved = await conn.fetchval(
        """INSERT INTO label_cursors (src, cursor) VALUES ($1, $2)
           ON CONFLICT (src) DO UPDATE SET cursor = excluded.cursor, updated_at = now()
           WHERE label_cursors.cursor = $3
           RETURNING true""",
        src,
        cursor,
        expected,
    )
    if moved is None:
        stored = await read_label_cursor(conn, src)
        raise CursorConflict(f"label cursor of {src} is at {stored}, expected {expected}")


async def _apply_labels(conn: Connection, src: str, rows: list[LabelRow]) -> int:
    """Store the rows that win over what is stored; returns how many."""
    if not rows:
        return 0
    keys = {row.key for row in rows}
    stored: dict[tuple[str, str, str], tuple[datetime, int]] = {
        (r["uri"], src, r["val"]): (r["cts"], r["seq"])
        for r in await conn.fetch(_STORED, src, [k[0] for k in keys], [k[2] for k in keys])
    }
    winners = sorted(newest(rows, stored), key=lambda row: row.key)  # one lock order
    if winners:
        labels = [row.label for row in winners]
        await conn.execute(
            _UPSERT,
            [lab.uri for lab in labels], [lab.src for lab in labels], [lab.val for lab in labels],
            [lab.cid for lab in labels], [lab.neg for lab in labels], [row.cts for row in winners],
            [row.exp for row in winners], [lab.sig for lab in labels], [row.view() for row in winners],
            [row.seq for row in winners],
        )  # fmt: skip
    return len(winners)


async def recompute_account_takedowns(
    conn: Connection, dids: set[str], moderation: frozenset[str]
) -> dict[str, str]:
    """Bring `actors.moderation_takedown` of these accounts in line with the stored labels of
    the moderation labelers; returns the changes (did -> outcome). The state is read after the
    per-DID locks are taken, so two transactions touching one account (two labelers, the
    expiry sweep) each decide from what the other committed."""
    if not dids:
        return {}
    ordered = sorted(dids)
    await lock_dids(conn, ordered)  # taken again by the writer below: advisory locks stack
    states = {
        r["did"]: r["down"]
        for r in await conn.fetch(_TAKEDOWN_STATES, ordered, sorted(moderation), _TAKEDOWN_VALUES)
    }
    outcomes = await apply_moderation_takedowns(conn, states)
    return {did: what for did, what in outcomes.items() if what not in ("unchanged", "unknown actor")}


async def _insert_rejects(conn: Connection, src: str, rejects: list[Reject]) -> None:
    await conn.executemany(
        "INSERT INTO label_rejects (src, seq, reason, label) VALUES ($1, $2, $3, $4)",
        [
            (src, r.seq, _clean(f"{r.reason}: {r.detail}")[:1000], _clean_json(r.label))
            for r in rejects
        ],
    )
    await conn.execute(_TRIM_REJECTS, MAX_REJECTS)


async def store_batch(
    conn: Connection,
    src: str,
    rows: list[LabelRow],
    rejects: list[Reject],
    *,
    cursor: int | None,
    expected: int | None,
    takedown_subjects: set[str],
    moderation: frozenset[str],
) -> StoreResult:
    """One transaction: the labels that win, the refusals, the takedown state of the accounts
    these labels may change, and the cursor (`cursor` None: unchanged)."""
    result = StoreResult()
    async with conn.transaction():
        result.applied = await _apply_labels(conn, src, rows)
        result.stale = len(rows) - result.applied
        result.takedowns = await recompute_account_takedowns(conn, takedown_subjects, moderation)
        if rejects:
            await _insert_rejects(conn, src, rejects)
        if cursor is not None and cursor != expected:
            await write_label_cursor(conn, src, cursor, expected)
    return result
