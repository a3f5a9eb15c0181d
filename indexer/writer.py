"""The one write path into the record index: validated ops, rev rules, counts, cursor, in one
transaction.

Every writer (live indexer, Jetstream, backfill, resync, test seeding) goes through
`apply_batch`. Within its transaction it:

1. validates each create/update against the lexicons (invalid ones go to `dead_letters`);
2. takes a transaction-scoped advisory lock per repo DID, so that concurrent writers (the live
   indexer and a backfill) never interleave on the same records: the state read next is exact;
3. keeps, per record URI, only the op with the highest rev (state under the rev rules is a
   function of the newest write), and drops ops whose rev is not newer than the stored row's or
   tombstone's rev;
4. upserts / deletes rows per collection with set-based statements (unnest arrays), writes
   tombstones for deletes, and adjusts `track_counts` for likes and comments of visible actors;
5. upserts `actors` (repo_rev only moves forward; resync marks), then the cursor row;
6. queues the PDS blob mirror (media/jobs.py) of tracks whose record carries an `audioBlob`.

PDS blob mirror: a track applied with an `audioBlob` gets a `mirror` job in the same
transaction (so a job exists exactly when the row does), in one statement per batch. The
mirror job later sets tracks.audio_url to our copy; "mirrored" is recognised as audio_url
differing from the record's own audioUrl while audio_blob_cid is unchanged. A new version of
the record with the same blob (a title change, a resync's re-write at a newer rev) keeps that
copy and queues nothing; a new blob queues a new job. Ops the rev rules ignore (replays) queue
nothing. Tracks of hidden actors (deactivated, taken down) are not mirrored - their PDS does
not serve their blobs - until `apply_account` shows the actor again, which queues the mirrors
still missing; deleted actors have no rows.

Invariants kept here (see docs/invariants.md):
- the cursor never passes an uncommitted row: it is written in the same transaction;
- track_counts.like_count(s) == count of likes rows for s whose actor is visible (same for
  comments), whatever the order of arrival;
- a record deleted at rev R never comes back from a write with rev <= R.

Account status changes (`apply_account`) and handle updates live here too, since they change
the same rows and counts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from core.db import Connection
from indexer import crashpoints
from indexer.crashpoints import ARMED as _CRASH_ARMED
from indexer.handles import request_checks
from indexer.records import (
    COMMENT,
    INDEXED_COLLECTIONS,
    LIKE,
    LIST,
    PROFILE,
    TRACK,
    RecordOp,
    RowError,
    check_op,
    comment_row,
    like_row,
    list_row,
    profile_row,
    track_row,
)
from media.jobs import enqueue_blob_mirrors
from protocol.syntax import is_valid

log = logging.getLogger("plyr.indexer")

# classid of the per-DID transaction locks (two-int advisory lock space); "plyw".
WRITER_LOCK_CLASS = 0x706C7977
DEFAULT_SOURCE = "writer"


@dataclass(slots=True)
class CursorUpdate:
    """Where a stream stands after this batch. `expected` fences a consumer that lost its lock:
    when given, the stored seq must still equal it (or be absent), else CursorConflict."""

    source: str
    seq: int
    event_time: datetime | None = None
    expected: int | None = None


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


@dataclass(slots=True)
class BatchResult:
    applied: int = 0  # rows created, updated or deleted
    stale: int = 0  # ignored by the rev rules (or the actor is deleted)
    invalid: int = 0  # dead-lettered ops
    hidden: int = 0  # records whose newest version is invalid: removed from the index, like deletes
    skipped: int = 0  # fm.plyr.* collections this index does not store
    new_dids: list[str] = field(default_factory=list)  # actors rows created by this batch
    dead_letters: int = 0  # dead_letters rows written (ops and frames)


class CursorConflict(Exception):
    """The stored cursor moved under us: another consumer owns the stream now."""


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


def validate_op(op: RecordOp, lexicons: Any) -> str | None:
    """The reason `op` cannot be applied, or None. Records and their keys are checked against
    the lexicons (the key type too: `tid`, `literal:self`, ...)."""
    if op.problem is not None:
        return op.problem
    problem = check_op(op)
    if problem is not None or op.action == "delete":
        return problem  # a delete at any well-formed key: it can only remove
    problems = lexicons.validate_record(op.collection, op.record, op.rkey)
    if problems:
        return "; ".join(problems[:5])
    return None


def hides_record(op: RecordOp) -> bool:
    """Whether an invalid create/update names its record and version well enough to hide the
    record: the newest version of a record being invalid removes it from the index like a
    delete (docs/invariants.md), so that two indexes of the same network agree."""
    return (
        op.action in ("create", "update")
        and isinstance(op.did, str)
        and is_valid("did", op.did)
        and isinstance(op.rkey, str)
        and is_valid("record-key", op.rkey)
        and isinstance(op.rev, str)
        and bool(op.rev)
    )


_STATE_SQL = """
SELECT -1 AS k, did AS uri, status AS rev, visible::text AS subject FROM actors
  WHERE did = ANY($7::text[])
UNION ALL SELECT 0, uri, rev, hidden_cid FROM tombstones WHERE uri = ANY($1::text[])
UNION ALL SELECT 1, uri, rev, subject_uri FROM likes WHERE uri = ANY($2::text[])
UNION ALL SELECT 2, uri, rev, subject_uri FROM comments WHERE uri = ANY($3::text[])
UNION ALL SELECT 3, uri, rev, CASE WHEN audio_blob_cid IS NULL THEN NULL
                                   WHEN audio_url IS DISTINCT FROM record->>'audioUrl'
                                   THEN audio_blob_cid END  -- the blob our copy is of
  FROM tracks WHERE uri = ANY($4::text[])
UNION ALL SELECT 4, uri, rev, NULL FROM lists WHERE uri = ANY($5::text[])
UNION ALL SELECT 5, uri, rev, NULL FROM profiles WHERE uri = ANY($6::text[])
"""
_STATE_KIND = {LIKE: 1, COMMENT: 2, TRACK: 3, LIST: 4, PROFILE: 5}

_UPSERT_TRACKS = """
INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, album, description, file_type,
                    audio_url, audio_blob_cid, image_url, duration_s, labels, record,
                    created_at, record_exact, sort_at)
SELECT u.uri, u.did, u.rkey, u.cid, u.rev, u.title, u.artist, u.album, u.description, u.file_type,
       u.audio_url, u.audio_blob_cid, u.image_url, u.duration_s,
       ARRAY(SELECT jsonb_array_elements_text(u.labels::jsonb)), u.record,
       u.created_at, u.record_exact, least(u.created_at, now())
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::bigint[], $15::text[], $16::jsonb[], $17::timestamptz[], $18::bytea[])
  AS u(uri, did, rkey, cid, rev, title, artist, album, description, file_type, audio_url,
       audio_blob_cid, image_url, duration_s, labels, record, created_at, record_exact)
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, title = excluded.title, artist = excluded.artist,
  album = excluded.album, description = excluded.description, file_type = excluded.file_type,
  -- The mirror (media/mirror.py) points audio_url at our copy of the blob; a new version of
  -- the record with the same blob keeps that copy (see "PDS blob mirror" in the module doc).
  audio_url = CASE WHEN excluded.audio_blob_cid IS DISTINCT FROM tracks.audio_blob_cid
                     OR excluded.audio_blob_cid IS NULL THEN excluded.audio_url
                   WHEN tracks.audio_url IS DISTINCT FROM tracks.record->>'audioUrl'
                     THEN tracks.audio_url
                   ELSE excluded.audio_url END,
  audio_blob_cid = excluded.audio_blob_cid,
  image_url = excluded.image_url, duration_s = excluded.duration_s, labels = excluded.labels,
  record = excluded.record, created_at = excluded.created_at, record_exact = excluded.record_exact,
  sort_at = least(excluded.created_at, tracks.indexed_at)
WHERE tracks.rev < excluded.rev
"""

_UPSERT_LIKES = """
INSERT INTO likes (uri, did, rkey, cid, rev, subject_uri, subject_cid, record, created_at,
                   record_exact, sort_at)
SELECT u.*, least(u.created_at, now())
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::jsonb[], $9::timestamptz[], $10::bytea[])
  AS u(uri, did, rkey, cid, rev, subject_uri, subject_cid, record, created_at, record_exact)
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, subject_uri = excluded.subject_uri,
  subject_cid = excluded.subject_cid, record = excluded.record, created_at = excluded.created_at,
  record_exact = excluded.record_exact, sort_at = least(excluded.created_at, likes.indexed_at)
WHERE likes.rev < excluded.rev
"""

_UPSERT_COMMENTS = """
INSERT INTO comments (uri, did, rkey, cid, rev, subject_uri, subject_cid, text, timestamp_ms,
                      record, created_at, updated_at, record_exact, sort_at)
SELECT u.*, least(u.created_at, now())
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::bigint[], $10::jsonb[], $11::timestamptz[], $12::timestamptz[],
            $13::bytea[])
  AS u(uri, did, rkey, cid, rev, subject_uri, subject_cid, text, timestamp_ms, record,
       created_at, updated_at, record_exact)
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, subject_uri = excluded.subject_uri,
  subject_cid = excluded.subject_cid, text = excluded.text, timestamp_ms = excluded.timestamp_ms,
  record = excluded.record, created_at = excluded.created_at, updated_at = excluded.updated_at,
  record_exact = excluded.record_exact, sort_at = least(excluded.created_at, comments.indexed_at)
WHERE comments.rev < excluded.rev
"""

_UPSERT_LISTS = """
INSERT INTO lists (uri, did, rkey, cid, rev, name, list_type, item_count, record, created_at,
                   updated_at, record_exact, sort_at)
SELECT u.*, least(u.created_at, now())
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::int[], $9::jsonb[], $10::timestamptz[], $11::timestamptz[], $12::bytea[])
  AS u(uri, did, rkey, cid, rev, name, list_type, item_count, record, created_at, updated_at,
       record_exact)
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, name = excluded.name, list_type = excluded.list_type,
  item_count = excluded.item_count, record = excluded.record, created_at = excluded.created_at,
  updated_at = excluded.updated_at, record_exact = excluded.record_exact,
  sort_at = least(excluded.created_at, lists.indexed_at)
WHERE lists.rev < excluded.rev
"""

_INSERT_LIST_ITEMS = """
INSERT INTO list_items (list_uri, position, subject_uri, subject_cid)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[])
"""

_UPSERT_PROFILES = """
INSERT INTO profiles (uri, did, cid, rev, avatar_url, bio, record, created_at, updated_at,
                      record_exact)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::jsonb[], $8::timestamptz[], $9::timestamptz[], $10::bytea[])
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, avatar_url = excluded.avatar_url, bio = excluded.bio,
  record = excluded.record, created_at = excluded.created_at, updated_at = excluded.updated_at,
  record_exact = excluded.record_exact
WHERE profiles.rev < excluded.rev
"""

_TABLE = {TRACK: "tracks", LIKE: "likes", COMMENT: "comments", LIST: "lists", PROFILE: "profiles"}

_UPSERT_TOMBSTONES = """
INSERT INTO tombstones (uri, did, collection, rev, hidden_cid)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev, hidden_cid = excluded.hidden_cid,
  deleted_at = now()
WHERE tombstones.rev < excluded.rev
"""

# Sorted input: concurrent writers lock count rows in the same order (no deadlocks).
_ADD_COUNTS = """
INSERT INTO track_counts (subject_uri, like_count, comment_count)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
ON CONFLICT (subject_uri) DO UPDATE SET
  like_count = track_counts.like_count + excluded.like_count,
  comment_count = track_counts.comment_count + excluded.comment_count
"""

_UPSERT_ACTORS = """
INSERT INTO actors AS a (did, repo_rev, needs_resync, resync_reason)
SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[])
ON CONFLICT (did) DO UPDATE SET
  repo_rev = CASE WHEN a.repo_rev IS NULL OR excluded.repo_rev > a.repo_rev
                  THEN excluded.repo_rev ELSE a.repo_rev END,
  needs_resync = a.needs_resync OR excluded.needs_resync,
  resync_reason = CASE WHEN excluded.needs_resync THEN excluded.resync_reason
                       ELSE a.resync_reason END,
  updated_at = now()
RETURNING did, (xmax = 0) AS inserted
"""

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
    stored = await conn.fetchval(
        "SELECT seq FROM cursors WHERE source = $1 FOR UPDATE", cursor.source
    )
    if stored is not None and stored != cursor.expected:
        raise CursorConflict(
            f"cursor {cursor.source} is at {stored}, expected {cursor.expected}: another consumer owns it"
        )
    await write_cursor(conn, CursorUpdate(cursor.source, cursor.seq, cursor.event_time))


async def read_cursor(conn: Connection | asyncpg.Pool, source: str) -> int | None:
    return await conn.fetchval("SELECT seq FROM cursors WHERE source = $1", source)


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
        if d.record is not None and _jsonb_problem(d.record) is not None:
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


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


# Errors that one record's data can cause (a string Postgres cannot hold, an index entry too
# large, ...). Retrying the batch would fail forever (a poison pill), so the batch is redone
# op by op and the offending ops are dead-lettered.
_DATA_ERRORS = (
    asyncpg.DataError,
    asyncpg.ProgramLimitExceededError,
    asyncpg.IntegrityConstraintViolationError,
)


def _jsonb_problem(record: Any) -> str | None:
    """Why a dead letter's record cannot go in its jsonb column, or None when it can."""
    try:
        encoded = orjson.dumps(record)
    except TypeError as exc:  # nesting beyond orjson's limit, or a non-JSON value
        return f"record cannot be encoded as JSON ({exc})"
    if b"\\u0000" in encoded:
        return "record contains U+0000 (NUL), which jsonb cannot hold"
    return None


def checked_rows(op: RecordOp, lexicons: Any) -> tuple[str | None, Any]:
    """(why `op` cannot be applied or None, the rows of its record). One rule for the writer,
    dead-letter replays and the audit: what our lexicons accept is stored."""
    problem = validate_op(op, lexicons)
    if problem is not None or op.action == "delete":
        return problem, None
    try:  # the row builders encode the record once (records.storable_record)
        return None, ROW_BUILDERS[op.collection](op)
    except (RowError, KeyError, TypeError) as exc:
        return f"cannot store record: {exc}", None


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
    winners: dict[str, tuple[RecordOp, Any]] = {}
    dids: set[str] = set()
    for op in ops:
        if op.collection not in INDEXED_COLLECTIONS:
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
            newest_rev = await _apply_winners(conn, winners, actor_dids, result)
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
                    revs = await _apply_winners(conn, {uri: winner}, actor_dids, one)
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


async def _apply_winners(
    conn: Connection,
    winners: Mapping[str, tuple[RecordOp, Any]],
    actor_dids: set[str],
    result: BatchResult,
) -> dict[str, str]:
    """Rows, tombstones and counts for the newest op of each URI; returns newest rev per DID."""
    if not winners:
        return {}
    # One round trip for what is stored now: the actors' status and visibility, and for every
    # URI we might touch its tombstone rev, row rev and (likes/comments) subject.
    by_kind: list[list[str]] = [[] for _ in range(6)]
    for uri, (op, _rows) in winners.items():
        by_kind[0].append(uri)
        by_kind[_STATE_KIND[op.collection]].append(uri)
    actor_state: dict[str, tuple[str, bool]] = {}
    tomb_rev: dict[str, str] = {}
    tomb_hidden: dict[str, str] = {}  # uri -> cid of the invalid version that hid it
    row_state: dict[str, tuple[str, str | None]] = {}
    for r in await conn.fetch(_STATE_SQL, *by_kind, list(actor_dids)):
        k = r["k"]
        if k == -1:
            actor_state[r["uri"]] = (r["rev"], r["subject"] == "true")
        elif k == 0:
            tomb_rev[r["uri"]] = r["rev"]
            if r["subject"] is not None:
                tomb_hidden[r["uri"]] = r["subject"]
        else:
            row_state[r["uri"]] = (r["rev"], r["subject"])

    upserts: dict[str, list[Any]] = {c: [] for c in INDEXED_COLLECTIONS}
    deletes: dict[str, list[str]] = {c: [] for c in INDEXED_COLLECTIONS}
    tombstones: list[tuple[str, str, str, str, str | None]] = []
    like_delta: dict[str, int] = {}
    comment_delta: dict[str, int] = {}
    newest_rev: dict[str, str] = {}
    mirrors: list[tuple[str, str, str, str]] = []
    for uri, (op, rows) in winners.items():
        status, visible = actor_state.get(op.did, ("active", True))
        if status == "deleted":
            result.stale += 1
            continue
        stored = row_state.get(uri)
        floor = max(stored[0] if stored else "", tomb_rev.get(uri, ""))
        if op.rev <= floor and not _comes_back(op, stored, tomb_hidden):
            result.stale += 1
            continue
        if op.action == "hide":
            result.hidden += 1
        else:
            result.applied += 1
        if newest_rev.get(op.did, "") < op.rev:
            newest_rev[op.did] = op.rev
        delta = like_delta if op.collection == LIKE else comment_delta if op.collection == COMMENT else None
        old_subject = stored[1] if stored else None
        if op.action in ("delete", "hide"):
            if stored is not None:
                deletes[op.collection].append(uri)
                if delta is not None and visible and old_subject is not None:
                    delta[old_subject] = delta.get(old_subject, 0) - 1
            hidden_cid = op.cid if op.action == "hide" else None
            tombstones.append((uri, op.did, op.collection, op.rev, hidden_cid))
            continue
        upserts[op.collection].append(rows)
        if op.collection == TRACK and rows[11] is not None and visible:
            # rows[11]: audio_blob_cid. Mirrored already (the same blob): nothing to do.
            if old_subject != rows[11]:
                mirrors.append((uri, op.did, rows[11], _blob_mime(op.record)))
        if delta is not None and visible:
            new_subject = rows[5]
            if old_subject != new_subject:
                delta[new_subject] = delta.get(new_subject, 0) + 1
                if old_subject is not None:
                    delta[old_subject] = delta.get(old_subject, 0) - 1

    for collection, uris in deletes.items():
        if uris:
            await conn.execute(f"DELETE FROM {_TABLE[collection]} WHERE uri = ANY($1::text[])", uris)
    if tombstones:
        await conn.execute(_UPSERT_TOMBSTONES, *_columns(tombstones))
    await _write_upserts(conn, upserts)
    if _CRASH_ARMED:
        crashpoints.hit("rows_written_before_commit")
    await _write_counts(conn, like_delta, comment_delta)
    if mirrors:
        await enqueue_blob_mirrors(conn, mirrors)
    return newest_rev


def _comes_back(
    op: RecordOp,
    stored: tuple[str, str | None] | None,
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


def _blob_mime(record: Mapping[str, Any] | None) -> str:
    blob = (record or {}).get("audioBlob")
    mime = blob.get("mimeType") if isinstance(blob, dict) else None
    return mime if isinstance(mime, str) and mime else "application/octet-stream"


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
            _UPSERT_ACTORS,
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


ROW_BUILDERS = {
    TRACK: track_row,
    LIKE: like_row,
    COMMENT: comment_row,
    LIST: list_row,
    PROFILE: profile_row,
}


async def _write_upserts(conn: Connection, upserts: dict[str, list[Any]]) -> None:
    if upserts[TRACK]:
        await conn.execute(_UPSERT_TRACKS, *_columns(upserts[TRACK]))
    if upserts[LIKE]:
        await conn.execute(_UPSERT_LIKES, *_columns(upserts[LIKE]))
    if upserts[COMMENT]:
        await conn.execute(_UPSERT_COMMENTS, *_columns(upserts[COMMENT]))
    if upserts[LIST]:
        list_rows = [row for row, _items in upserts[LIST]]
        await conn.execute(_UPSERT_LISTS, *_columns(list_rows))
        list_uris = [row[0] for row in list_rows]
        await conn.execute("DELETE FROM list_items WHERE list_uri = ANY($1::text[])", list_uris)
        items = [
            (row[0], pos, subject_uri, subject_cid)
            for row, row_items in upserts[LIST]
            for pos, (subject_uri, subject_cid) in enumerate(row_items)
        ]
        if items:
            await conn.execute(_INSERT_LIST_ITEMS, *_columns(items))
    if upserts[PROFILE]:
        await conn.execute(_UPSERT_PROFILES, *_columns(upserts[PROFILE]))


async def _write_counts(
    conn: Connection, like_delta: Mapping[str, int], comment_delta: Mapping[str, int]
) -> None:
    subjects = sorted(
        s for s in set(like_delta) | set(comment_delta) if like_delta.get(s) or comment_delta.get(s)
    )
    if subjects:
        await conn.execute(
            _ADD_COUNTS,
            subjects,
            [like_delta.get(s, 0) for s in subjects],
            [comment_delta.get(s, 0) for s in subjects],
        )


async def _adjust_counts_for_actor(conn: Connection, did: str, sign: int) -> None:
    """Add (sign=1) or remove (sign=-1) the actor's likes and comments from the counts."""
    rows = await conn.fetch(
        """SELECT subject_uri, sum(l) AS likes, sum(c) AS comments FROM (
             SELECT subject_uri, 1 AS l, 0 AS c FROM likes WHERE did = $1
             UNION ALL SELECT subject_uri, 0, 1 FROM comments WHERE did = $1) s
           GROUP BY subject_uri ORDER BY subject_uri""",
        did,
    )
    if rows:
        await _write_counts(
            conn,
            {r["subject_uri"]: sign * int(r["likes"]) for r in rows},
            {r["subject_uri"]: sign * int(r["comments"]) for r in rows},
        )


@dataclass(slots=True)
class AccountChange:
    did: str
    active: bool
    status: str | None = None
    seq: int | None = None


async def apply_account(
    conn: Connection, change: AccountChange, *, cursor: CursorUpdate | None = None
) -> str:
    """Apply an `#account` event to an actor we index; returns what happened (for logs).

    inactive -> hidden (rows kept, counts without them); active -> shown again (counts back);
    status `deleted` -> the actor's rows removed, tombstoned at their rev, counts adjusted.
    An inactive status of a DID with no actors row yet is stored (a hidden actor row): records
    that arrive later (a backfill racing the stream, a late delivery) must stay hidden too.
    An active event for an unknown DID changes nothing.
    """
    async with conn.transaction():
        await lock_dids(conn, [change.did])
        row = await conn.fetchrow(
            "SELECT status, visible, repo_rev FROM actors WHERE did = $1", change.did
        )
        outcome = "unknown actor"
        if row is None and not change.active:
            await conn.execute(
                """INSERT INTO actors (did, status, visible) VALUES ($1, $2, false)
                   ON CONFLICT (did) DO NOTHING""",
                change.did,
                change.status or "deactivated",
            )
            outcome = "remembered"
        elif row is not None:
            was_visible = row["visible"]
            if change.active:
                outcome = "shown"
                if not was_visible:
                    await _adjust_counts_for_actor(conn, change.did, +1)
                    await _queue_missing_mirrors(conn, change.did)
                await conn.execute(
                    "UPDATE actors SET status = 'active', visible = true, updated_at = now() WHERE did = $1",
                    change.did,
                )
            else:
                status = change.status or "deactivated"
                if was_visible:
                    await _adjust_counts_for_actor(conn, change.did, -1)
                if status == "deleted":
                    await _delete_actor_rows(conn, change.did, row["repo_rev"])
                    outcome = "deleted"
                else:
                    outcome = "hidden"
                await conn.execute(
                    "UPDATE actors SET status = $2, visible = false, updated_at = now() WHERE did = $1",
                    change.did,
                    status,
                )
        if cursor is not None:
            await write_cursor(conn, cursor)
        if _CRASH_ARMED:
            crashpoints.hit("account_before_commit")
    return outcome


async def _queue_missing_mirrors(conn: Connection, did: str) -> None:
    """Mirror jobs for the actor's tracks with a blob that is not mirrored yet (it was hidden)."""
    rows = await conn.fetch(
        """SELECT uri, audio_blob_cid, record->'audioBlob'->>'mimeType' AS mime FROM tracks
           WHERE did = $1 AND audio_blob_cid IS NOT NULL
             AND audio_url IS NOT DISTINCT FROM record->>'audioUrl'""",
        did,
    )
    await enqueue_blob_mirrors(
        conn,
        [(r["uri"], did, r["audio_blob_cid"], r["mime"] or "application/octet-stream") for r in rows],
    )


async def _delete_actor_rows(conn: Connection, did: str, repo_rev: str | None) -> None:
    # Tombstone every record at max(its rev, the repo's newest rev): replays stay dead.
    for collection, table in _TABLE.items():
        await conn.execute(
            f"""WITH gone AS (DELETE FROM {table} WHERE did = $1 RETURNING uri, rev)
                INSERT INTO tombstones (uri, did, collection, rev)
                SELECT uri, $1, $2,
                       CASE WHEN $3::text IS NOT NULL AND $3::text COLLATE "C" > rev
                            THEN $3::text ELSE rev END
                FROM gone
                ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev, deleted_at = now()
                WHERE tombstones.rev < excluded.rev""",
            did,
            collection,
            repo_rev,
        )


async def update_handle(conn: Connection | asyncpg.Pool, did: str, handle: str | None) -> None:
    """Store the bidirectionally verified handle (or NULL) of an indexed actor."""
    await conn.execute(
        "UPDATE actors SET handle = $2, updated_at = now() WHERE did = $1 AND handle IS DISTINCT FROM $2",
        did,
        handle,
    )


_DUMP_VALUE = {
    # Likes written before migration 0002 have no stored record: rebuild it from the columns.
    LIKE: """coalesce(t.record, jsonb_build_object('$type', 'fm.plyr.like', 'subject',
               jsonb_build_object('uri', t.subject_uri, 'cid', t.subject_cid),
               'createdAt', to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))""",
}


async def dump_records(pool: asyncpg.Pool, collection: str | None = None) -> AsyncIterator[dict[str, Any]]:
    """Indexed records of visible actors, by collection then URI: {uri, cid, rev, value}."""
    collections = [collection] if collection else sorted(INDEXED_COLLECTIONS)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        for coll in collections:
            value = _DUMP_VALUE.get(coll, "t.record")
            query = f"""SELECT t.uri, t.cid, t.rev, {value} AS value, t.record_exact
                        FROM {_TABLE[coll]} t
                        JOIN actors a ON a.did = t.did WHERE a.visible ORDER BY t.uri"""
            async for r in conn.cursor(query, prefetch=1000):
                exact = r["record_exact"]  # the record as published when jsonb could not hold it
                value = orjson.loads(exact) if exact is not None else r["value"]
                yield {"uri": r["uri"], "cid": r["cid"], "rev": r["rev"], "value": value}


_default_lexicons: Any = None


def default_lexicons() -> Any:
    """The project's lexicons, loaded once."""
    global _default_lexicons
    if _default_lexicons is None:
        from protocol.lexicon import LEXICONS_DIR, Lexicons

        _default_lexicons = Lexicons.load(LEXICONS_DIR)
    return _default_lexicons


async def index_records(
    pool: asyncpg.Pool, ops: Sequence[RecordOp], *, lexicons: Any = None, source: str = "seed"
) -> BatchResult:
    """Apply ops through the writer (tests and seeding)."""
    async with pool.acquire() as conn:
        return await apply_batch(conn, ops, lexicons=lexicons or default_lexicons(), source=source)
