"""`apply_batch`: the one write path into the record index. Validated ops, the rev rules,
counters, mirror requests, actors, dead letters and the cursor, in ONE transaction.

Every writer (live indexer, Jetstream, backfill, resync, dead-letter replay, seed-demo) goes
through it. Within its transaction it:

1. validates each create/update against the lexicons (invalid ones go to `dead_letters`, and
   hide their record when they name it well enough: docs/invariants.md 13);
2. takes a transaction-scoped advisory lock per repo DID (writer/locks.py), so that concurrent
   writers never interleave on the same records: the state read next is exact;
3. keeps, per record URI, only the op with the highest rev, and drops ops whose rev is not newer
   than the stored row's or tombstone's rev (writer/winners.py);
4. writes rows, tombstones, counters (writer/counts.py) and mirror requests (writer/outbox.py)
   with set-based statements;
5. upserts `actors` (repo_rev only moves forward; resync marks), dead letters, handle-check
   requests, then the cursor row.

Invariants kept here (see docs/invariants.md): the cursor never passes an uncommitted row;
counters equal the rows they count, whatever the order of arrival; a record deleted at rev R
never comes back from a write with rev <= R.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from core.db import Connection
from indexer import crashpoints
from indexer.crashpoints import ARMED as _CRASH_ARMED
from indexer.handles import request_checks
from indexer.records import RecordOp
from indexer.writer.checks import STORED_COLLECTIONS, checked_rows, hides_record
from indexer.writer.cursor import CursorUpdate, write_cursor
from indexer.writer.letters import DeadLetter, insert_dead_letters
from indexer.writer.locks import lock_dids
from indexer.writer.statements import UPSERT_ACTORS
from indexer.writer.winners import BatchResult, Winners, apply_winners

log = logging.getLogger("plyr.indexer")

DEFAULT_SOURCE = "writer"


# Errors that one record's data can cause (a string Postgres cannot hold, an index entry too
# large, ...). Retrying the batch would fail forever (a poison pill), so the batch is redone
# op by op and the offending ops are dead-lettered.
_DATA_ERRORS = (
    asyncpg.DataError,
    asyncpg.ProgramLimitExceededError,
    asyncpg.IntegrityConstraintViolationError,
)


async def apply_batch(
    conn: Connection,
    ops: Sequence[RecordOp],
    *,
    lexicons: Any,
    cursor: CursorUpdate | None = None,
    source: str = DEFAULT_SOURCE,
    dead_letters: Sequence[DeadLetter] = (),
    repo_revs: Mapping[str, str] | None = None,
    resync: Mapping[str, str] | None = None,
    handle_checks: Collection[str] = (),
) -> BatchResult:
    """Apply `ops` (in stream order) in ONE transaction with the cursor; see the module doc.

    `dead_letters`: frame-level failures found before this call, stored in the same transaction.
    `repo_revs`: newest commit rev seen per DID (also from commits without plyr ops).
    `resync`: DIDs to mark `needs_resync`, with the reason.
    `handle_checks`: indexed DIDs whose handle must be verified again (indexer/handles.py).
    """
    result = BatchResult()
    letters = list(dead_letters)
    winners: Winners = {}
    dids: set[str] = set()
    for op in ops:
        if op.collection not in STORED_COLLECTIONS:
            result.skipped += 1
            continue
        problem, rows = checked_rows(op, lexicons)
        if problem is not None:
            result.invalid += 1
            letters.append(_op_letter(op, problem))
            if isinstance(op.did, str):
                dids.add(op.did)
            if not hides_record(op):
                continue
            op = replace(op, action="hide")  # competes with the URI's other ops by rev below
        dids.add(op.did)
        uri = op.uri
        previous = winners.get(uri)
        if previous is not None:
            result.stale += 1  # one of the two loses
            if op.rev < previous[0].rev:
                continue
        winners[uri] = (op, rows)

    actor_dids = set(dids)
    if repo_revs:
        actor_dids.update(repo_revs)
    if resync:
        actor_dids.update(resync)

    try:
        async with conn.transaction():
            await lock_dids(conn, actor_dids)
            newest_rev = await apply_winners(conn, winners, actor_dids, result)
            await _finish(conn, result, actor_dids, newest_rev, repo_revs, resync, letters, source, cursor)
            await request_checks(conn, handle_checks)
        return result
    except _DATA_ERRORS as exc:
        if not winners:
            raise
        log.warning("batch hit a data error; isolating the bad records", extra={"error": str(exc)})

    # Again, one op per savepoint: the ones the database refuses become dead letters.
    result = BatchResult(invalid=result.invalid, skipped=result.skipped, stale=result.stale)
    async with conn.transaction():
        await lock_dids(conn, actor_dids)
        newest_rev = {}
        for uri, winner in winners.items():
            one = BatchResult()
            try:
                async with conn.transaction():
                    revs = await apply_winners(conn, {uri: winner}, actor_dids, one)
            except _DATA_ERRORS as exc:
                result.invalid += 1
                letters.append(_op_letter(winner[0], f"database refused the record: {exc}"))
                continue
            result.applied += one.applied
            result.hidden += one.hidden
            result.stale += one.stale
            for did, rev in revs.items():
                if newest_rev.get(did, "") < rev:
                    newest_rev[did] = rev
        await _finish(conn, result, actor_dids, newest_rev, repo_revs, resync, letters, source, cursor)
        await request_checks(conn, handle_checks)
    return result


def _op_letter(op: RecordOp, reason: str) -> DeadLetter:
    return DeadLetter(
        reason=reason, seq=op.seq, uri=op.uri, did=op.did, collection=op.collection,
        rev=op.rev, cid=op.cid, record=op.record,
    )  # fmt: skip


async def _finish(
    conn: Connection,
    result: BatchResult,
    actor_dids: set[str],
    newest_rev: Mapping[str, str],
    repo_revs: Mapping[str, str] | None,
    resync: Mapping[str, str] | None,
    letters: list[DeadLetter],
    source: str,
    cursor: CursorUpdate | None,
) -> None:
    """Actors (repo_rev forward only, resync marks), dead letters, then the cursor."""
    if actor_dids:
        revs = dict(repo_revs or {})
        for did, rev in newest_rev.items():
            if revs.get(did, "") < rev:
                revs[did] = rev
        ordered = sorted(actor_dids)
        marks = resync or {}
        for r in await conn.fetch(
            UPSERT_ACTORS,
            ordered,
            [revs.get(d) for d in ordered],
            [d in marks for d in ordered],
            [marks.get(d) for d in ordered],
        ):
            if r["inserted"]:
                result.new_dids.append(r["did"])
    result.dead_letters = await insert_dead_letters(conn, source, letters)
    if cursor is not None:
        await write_cursor(conn, cursor)
    if _CRASH_ARMED:
        crashpoints.hit("before_commit")
