"""Replaying dead letters after a fix: re-validate, apply through the writer, record the result.

Two kinds of dead letters exist:
- records that failed validation (`record` set): validated again against the current lexicons
  and, if valid now, applied as an upsert at their original rev (the rev rules make a late
  apply safe: a newer write or delete wins);
- frames that failed verification (`raw` set): decoded and verified again (the key may have
  been unresolvable then), and their ops applied.
A letter that passes is marked `replayed_at` with the outcome; one that still fails keeps
pending, with the new reason in `replay_result`.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from indexer.frames import CommitEvent, FrameDecoder
from indexer.records import RecordOp
from indexer.verify import Verifier, VerifyError
from indexer.writer import apply_batch, checked_rows, default_lexicons
from protocol.identity import IdentityResolving
from protocol.lexicon import Lexicons


async def replay_dead_letters(
    pool: asyncpg.Pool,
    *,
    limit: int = 1000,
    verify: bool = True,
    lexicons: Lexicons | None = None,
    resolver: IdentityResolving | None = None,
) -> dict[str, int]:
    """Replay up to `limit` pending letters; `resolver` is needed when `verify` is on."""
    lexicons = lexicons or default_lexicons()
    verifier = Verifier(resolver, verify_signatures=verify)
    summary = {"applied": 0, "still_invalid": 0}
    rows = await pool.fetch(
        """SELECT id, seq, did, collection, uri, rev, cid, record, raw FROM dead_letters
           WHERE replayed_at IS NULL ORDER BY id LIMIT $1""",
        limit,
    )
    for row in rows:
        ops, problem = await _ops_for(row, lexicons, verifier)
        async with pool.acquire() as conn, conn.transaction():
            if problem is not None:
                await conn.execute(
                    "UPDATE dead_letters SET replay_result = $2 WHERE id = $1", row["id"], problem
                )
                summary["still_invalid"] += 1
                continue
            result = await apply_batch(conn, ops, lexicons=lexicons, source="deadletters")
            outcome = f"applied {result.applied}, stale {result.stale}"
            await conn.execute(
                "UPDATE dead_letters SET replayed_at = now(), replay_result = $2 WHERE id = $1",
                row["id"],
                outcome,
            )
            summary["applied"] += 1
    return summary


async def _ops_for(row: asyncpg.Record, lexicons: Any, verifier: Verifier) -> tuple[list[RecordOp], str | None]:
    record = row["record"]
    raw = row["raw"]
    if record is None and raw is not None and row["uri"] is not None and bytes(raw[:1]) == b"{":
        # A record jsonb could not hold (U+0000), kept as its JSON bytes. (A stored frame is
        # DAG-CBOR, whose first byte is never "{".)
        record, raw = orjson.loads(bytes(raw)), None
    if raw is not None:
        ev = FrameDecoder().decode(bytes(raw))
        if not isinstance(ev, CommitEvent):
            return [], f"stored frame is not a commit ({type(ev).__name__})"
        try:
            ops = await verifier.commit_ops(ev)
        except VerifyError as exc:
            return [], f"{exc.kind}: {exc}"
        for op in ops:
            problem = _problem(op, lexicons)
            if problem is not None:
                return [], problem
        return ops, None
    if record is None or row["uri"] is None:
        return [], "nothing to replay (no record or frame stored)"
    parts = row["uri"].removeprefix("at://").split("/")
    if len(parts) != 3:
        return [], f"bad uri {row['uri']}"
    did, collection, rkey = parts
    op = RecordOp("update", did, collection, rkey, row["rev"] or "", row["cid"], record, row["seq"])
    problem = _problem(op, lexicons)
    return ([], problem) if problem else ([op], None)


def _problem(op: RecordOp, lexicons: Any) -> str | None:
    return checked_rows(op, lexicons)[0]
