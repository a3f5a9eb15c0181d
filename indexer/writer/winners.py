"""The newest op of each record URI against what is stored: rows, tombstones, counters and
mirror requests, all written by one set-based statement per batch (writer/batch_sql.py).

The rev rules: an op whose rev is not newer than the stored row's or tombstone's rev changes
nothing (a version hidden as invalid may return: `_comes_back`); a delete or a hiding leaves a
tombstone. Records of deleted actors are not written; hidden actors' rows are written but do not
count in `track_counts` or the totals, and their tracks are not mirrored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from core.db import Connection
from indexer import crashpoints
from indexer.crashpoints import ARMED as _CRASH_ARMED
from indexer.match_keys import PAIR_SEPARATOR, pair_key
from indexer.network_plays import NETWORK_PLAY_COLLECTIONS, PLAY
from indexer.records import COMMENT, LIKE, LIST, TRACK, RecordOp
from indexer.writer.batch_sql import WRITE_BATCH_SQL, BatchWrites, group
from indexer.writer.counts import CountDeltas
from indexer.writer.network_match import MatchWork, apply_matches, lock_keys
from indexer.writer.outbox import blob_mime
from indexer.writer.statements import INSERT_LIST_ITEMS, STATE_KIND, STATE_SQL

# uri -> (the op that wins, the rows its record makes or None)
Winners = dict[str, tuple[RecordOp, Any]]

# Positions in a tracks row (indexer/records.track_row).
_TRACK_BLOB_CID = 11
_TRACK_SECONDS = 13
_TRACK_MATCH_KEY = 18
_TRACK_ARTIST_KEY = 19
# Position of the subject in a likes or comments row.
_SUBJECT = 5
# Position of the name key in a network_plays row (indexer/network_plays.network_play_row).
_PLAY_NAME_KEY = 7
_PLAY_ARTIST_KEYS = 8  # a JSON array
_PLAY_AT = 10


@dataclass(slots=True)
class BatchResult:
    applied: int = 0  # rows created, updated or deleted
    stale: int = 0  # ignored by the rev rules (or the actor is deleted)
    invalid: int = 0  # dead-lettered ops
    hidden: int = 0  # records whose newest version is invalid: removed from the index, like deletes
    skipped: int = 0  # fm.plyr.* collections this index does not store
    new_dids: list[str] = field(default_factory=list)  # actors rows created by this batch
    dead_letters: int = 0  # dead_letters rows written (ops and frames)


@dataclass(slots=True)
class _Stored:
    """What is stored for the URIs of a batch (one round trip, STATE_SQL)."""

    actors: dict[str, tuple[str, bool]] = field(default_factory=dict)  # did -> (status, visible)
    tomb_rev: dict[str, str] = field(default_factory=dict)
    tomb_hidden: dict[str, str] = field(default_factory=dict)  # uri -> cid of the refused version
    rows: dict[str, tuple[str, str | None, int]] = field(default_factory=dict)  # rev, subject, s
    played_at: dict[str, datetime] = field(default_factory=dict)  # network plays: uri -> playedTime


async def _read_stored(conn: Connection, winners: Winners, actor_dids: set[str]) -> _Stored:
    by_kind: list[list[str]] = [[] for _ in range(7)]
    for uri, (op, _rows) in winners.items():
        by_kind[0].append(uri)
        by_kind[STATE_KIND[op.collection]].append(uri)
    stored = _Stored()
    for r in await conn.fetch(STATE_SQL, *by_kind[:6], list(actor_dids), by_kind[6]):
        k = r["k"]
        if k == -1:
            stored.actors[r["uri"]] = (r["rev"], r["subject"] == "true")
        elif k == 0:
            stored.tomb_rev[r["uri"]] = r["rev"]
            if r["subject"] is not None:
                stored.tomb_hidden[r["uri"]] = r["subject"]
        else:
            seconds = r["seconds"]
            stored.rows[r["uri"]] = (r["rev"], r["subject"], int(seconds or 0))
            if r["at"] is not None:
                stored.played_at[r["uri"]] = r["at"]
    return stored


async def apply_winners(
    conn: Connection, winners: Winners, actor_dids: set[str], result: BatchResult
) -> dict[str, str]:
    """Rows, tombstones, counters and mirror requests for the newest op of each URI; returns
    the newest rev applied per DID."""
    if not winners:
        return {}
    stored = await _read_stored(conn, winners, actor_dids)
    writes = BatchWrites()
    counts = writes.counts
    matches = MatchWork()
    newest_rev: dict[str, str] = {}
    for uri, (op, rows) in winners.items():
        status, visible = stored.actors.get(op.did, ("active", True))
        if status == "deleted":
            result.stale += 1
            continue
        row = stored.rows.get(uri)
        floor = max(row[0] if row else "", stored.tomb_rev.get(uri, ""))
        if op.rev <= floor and not _comes_back(op, row, stored.tomb_hidden):
            result.stale += 1
            continue
        if op.action == "hide":
            result.hidden += 1
        else:
            result.applied += 1
        if newest_rev.get(op.did, "") < op.rev:
            newest_rev[op.did] = op.rev
        _match_work(matches, op, visible, row, rows)
        if op.collection == PLAY:  # its legacy copy (same listener and playedTime) is re-decided
            matches.twin(op.did, stored.played_at.get(uri), rows[_PLAY_AT] if rows is not None else None)
        if op.action in ("delete", "hide"):
            if row is not None:
                writes.deletes[group(op.collection)].append(uri)
                _count(counts, op, visible, row, None)
            hidden_cid = op.cid if op.action == "hide" else None
            writes.tombstones.append((uri, op.did, op.collection, op.rev, hidden_cid))
            continue
        writes.upserts[group(op.collection)].append(rows)
        _count(counts, op, visible, row, rows)
        if op.collection == TRACK and rows[_TRACK_BLOB_CID] is not None and visible:
            # Media skips blobs it holds for this track already (writer/outbox.py).
            writes.mirrors.append((uri, op.did, rows[_TRACK_BLOB_CID], blob_mime(op.record)))

    await lock_keys(conn, matches.locks)  # before any row is written (writer/network_match.py)
    await conn.execute(WRITE_BATCH_SQL, *writes.args())
    if _CRASH_ARMED:
        crashpoints.hit("rows_written_before_commit")
    await _write_list_items(conn, writes.upserts[LIST], stored)
    await apply_matches(conn, matches)
    return newest_rev


def _match_work(
    work: MatchWork, op: RecordOp, visible: bool, old: tuple[str, str | None, int] | None, new: Any
) -> None:
    """What a written track or network play asks the match statement to decide."""
    if op.collection == TRACK:
        new_pair = pair_key(new[_TRACK_MATCH_KEY], new[_TRACK_ARTIST_KEY]) if new is not None else None
        old_pair = old[1] if old is not None else None
        if old is not None and new is not None and old_pair == new_pair and new[_TRACK_SECONDS]:
            if old[2] == new[_TRACK_SECONDS]:
                return  # nothing matching reads changed (a new description, cover, ...)
        work.tracks.append(op.uri)
        for pair in (old_pair, new_pair):
            if pair is not None:
                work.pairs.add(pair)
                work.locks.add(pair)
    elif op.collection in NETWORK_PLAY_COLLECTIONS:
        if new is not None:
            work.plays.append(op.uri)
            name_key = new[_PLAY_NAME_KEY]
            if name_key:
                work.locks.update(name_key + PAIR_SEPARATOR + a for a in orjson.loads(new[_PLAY_ARTIST_KEYS]))
        elif old is not None and old[1] is not None and visible:
            work.remove(old[1], old[2] == 1)  # a matched play deleted or hidden: its count goes


def _count(
    counts: CountDeltas,
    op: RecordOp,
    visible: bool,
    old: tuple[str, str | None, int] | None,
    new: Any,
) -> None:
    """The counter changes of replacing the stored row `old` (or none) by `new` (or none)."""
    actor = counts.actor(op.did, visible)
    step = (new is not None) - (old is not None)
    if op.collection == TRACK:
        actor.tracks += step
        actor.seconds += (int(new[_TRACK_SECONDS] or 0) if new is not None else 0) - (
            old[2] if old is not None else 0
        )
    elif op.collection == LIST:
        actor.lists += step
    elif op.collection in (LIKE, COMMENT):
        if op.collection == LIKE:
            actor.likes += step
            per_subject = counts.likes
        else:
            actor.comments += step
            per_subject = counts.comments
        old_subject = old[1] if old is not None else None
        new_subject = new[_SUBJECT] if new is not None else None
        if visible and old_subject != new_subject:
            if old_subject is not None:
                counts.subject(per_subject, old_subject, -1)
            if new_subject is not None:
                counts.subject(per_subject, new_subject, +1)


def _comes_back(
    op: RecordOp,
    stored: tuple[str, str | None, int] | None,
    tomb_hidden: Mapping[str, str],
) -> bool:
    """A version hidden because our lexicons refused it, now valid (a replay after a lexicon
    fix): the same cid is the same content, so it returns, unless a row is stored already.
    (The hiding tombstone keeps its rev, which later backfills may have moved past op.rev:
    the floor for older writes stays where it was.)"""
    return (
        op.action in ("create", "update")
        and op.cid is not None
        and tomb_hidden.get(op.uri) == op.cid
        and stored is None
    )


async def _write_list_items(conn: Connection, lists: list[Any], stored: _Stored) -> None:
    """The items of the lists written: the old ones of lists stored before go first."""
    if not lists:
        return
    replaced = [row[0] for row, _items in lists if row[0] in stored.rows]
    if replaced:
        await conn.execute("DELETE FROM list_items WHERE list_uri = ANY($1::text[])", replaced)
    items = [
        (row[0], pos, subject_uri, subject_cid)
        for row, row_items in lists
        for pos, (subject_uri, subject_cid) in enumerate(row_items)
    ]
    if items:
        await conn.execute(INSERT_LIST_ITEMS, *(list(col) for col in zip(*items, strict=True)))
