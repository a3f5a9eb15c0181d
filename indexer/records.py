"""Record operations and how each `fm.plyr.*` record becomes a table row.

`RecordOp` is what every source (firehose, Jetstream, backfill, tests) hands to the writer: one
create/update/delete of one record, in JSON data-model form. The `*_row` functions turn a valid
record into the column values of its table. Columns are derived views of the record and never
narrower than the lexicon (docs/invariants.md): where a column cannot hold a valid value it holds a
clamped or surrogate value, and the record itself is kept whole (`storable_record`). `RowError`
is left for shapes the lexicon refuses, which the writer has already dead-lettered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from indexer.match_keys import track_keys
from protocol.syntax import InvalidSyntax, is_valid, parse_datetime

TRACK = "fm.plyr.track"
LIKE = "fm.plyr.like"
COMMENT = "fm.plyr.comment"
LIST = "fm.plyr.list"
PROFILE = "fm.plyr.actor.profile"

# The record collections this index stores; other fm.plyr.* collections are ignored.
INDEXED_COLLECTIONS = (TRACK, LIKE, COMMENT, LIST, PROFILE)
PREFIX = "fm.plyr."
ACTIONS = ("create", "update", "delete")


@dataclass(slots=True)
class RecordOp:
    """One record operation. `record` is the JSON data-model form (None for deletes)."""

    action: str
    did: str
    collection: str
    rkey: str
    rev: str
    cid: str | None = None
    record: dict[str, Any] | None = None
    seq: int | None = None
    # Known invalid before the writer sees it (e.g. a repo block that does not decode): the
    # writer dead-letters it with this reason and hides the record, like any invalid version.
    problem: str | None = None

    @property
    def uri(self) -> str:
        return f"at://{self.did}/{self.collection}/{self.rkey}"


class RowError(ValueError):
    """A record that passed the lexicon but cannot be stored (the reason is the message)."""


def check_op(op: RecordOp) -> str | None:
    """Problems with the op itself (not its record): None when fine, else the reason."""
    if op.action not in ACTIONS:
        return f"unknown action {op.action!r}"
    if not is_valid("did", op.did):
        return f"invalid repo DID {op.did!r}"
    if not is_valid("record-key", op.rkey):
        return f"invalid record key {op.rkey!r}"
    if not isinstance(op.rev, str) or not op.rev:
        return "missing rev"
    if op.action != "delete":
        if not isinstance(op.record, dict):
            return "create/update without a record"
        if not isinstance(op.cid, str) or not op.cid:
            return "create/update without a cid"
        record_type = op.record.get("$type")
        if record_type != op.collection:
            return f"record $type {record_type!r} does not match collection {op.collection}"
    return None


# Python datetimes (and so the typed columns) span 0001-01-01..9999-12-31 UTC; the datetime syntax
# also allows year 0000 and offsets that carry year 0001 or 9999 across that edge in UTC.
# (Not datetime.min/max themselves: asyncpg sends those as -infinity/infinity.)
_EARLIEST = datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def _datetime(record: dict[str, Any], field: str, *, required: bool = True) -> datetime | None:
    value = record.get(field)
    if value is None and not required:
        return None
    try:
        return parse_datetime(value)  # type: ignore[arg-type]
    except (InvalidSyntax, TypeError) as exc:
        if isinstance(value, str) and is_valid("datetime", value):
            return _EARLIEST if value < "5000" else _LATEST  # valid, beyond the column: clamp
        raise RowError(f"{field}: {exc}") from None


# A btree index entry holds at most about 2.7 KB, and at-uris may be 8 KB. A subject URI longer
# than any record URI we index (the DIDs we resolve are short) names nothing we can show; its
# column holds a digest instead, which cannot equal a real at:// URI. The record keeps the URI.
SUBJECT_COLUMN_MAX_BYTES = 1024


def subject_column(uri: str) -> str:
    """The value of a `subject_uri` column for a subject URI (see SUBJECT_COLUMN_MAX_BYTES)."""
    encoded = uri.encode()
    if len(encoded) <= SUBJECT_COLUMN_MAX_BYTES:
        return uri
    return "oversize:sha256:" + hashlib.sha256(encoded).hexdigest()


def storable_record(record: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """(what the `record` jsonb column holds, the exact JSON bytes when that is not the record).

    jsonb cannot hold U+0000, which data-model strings may contain: such a record is stored with
    U+FFFD in place of each NUL, and exactly as JSON bytes beside it (`record_exact`)."""
    try:
        encoded = orjson.dumps(record)
    except TypeError as exc:  # a non-JSON value (validation refuses deep nesting before this)
        raise RowError(f"record cannot be encoded as JSON ({exc})") from None
    if b"\\u0000" not in encoded:
        return record, None
    return _without_nul(record), encoded


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _strong_ref(record: dict[str, Any], field: str = "subject") -> tuple[str, str]:
    ref = record.get(field)
    if not isinstance(ref, dict):
        raise RowError(f"{field} is not a strongRef")
    uri, cid = ref.get("uri"), ref.get("cid")
    if not isinstance(uri, str) or not isinstance(cid, str):
        raise RowError(f"{field} needs uri and cid strings")
    return subject_column(uri), cid


def _blob_cid(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    ref = value.get("ref")
    if isinstance(ref, dict) and isinstance(ref.get("$link"), str):
        return ref["$link"]
    # Legacy blob form: {"cid": "...", "mimeType": "..."}
    cid = value.get("cid")
    return cid if isinstance(cid, str) else None


def _self_labels(value: Any) -> list[str]:
    if not isinstance(value, dict):
        return []
    values = value.get("values")
    if not isinstance(values, list):
        return []
    return [v["val"] for v in values if isinstance(v, dict) and isinstance(v.get("val"), str)]


def track_row(op: RecordOp) -> tuple[Any, ...]:
    r, exact = storable_record(op.record or {})
    duration = r.get("duration")  # any 64-bit integer >= 0 (lexicon): the column is bigint
    return (
        op.uri, op.did, op.rkey, op.cid, op.rev,
        r["title"], r["artist"], r.get("album"), r.get("description"), r["fileType"],
        r.get("audioUrl"), _blob_cid(r.get("audioBlob")), r.get("imageUrl"), duration,
        orjson.dumps(_self_labels(r.get("labels"))).decode(), r, _datetime(r, "createdAt"), exact,
        *track_keys(r),  # title and artist keys: network plays are matched on them
    )  # fmt: skip


def like_row(op: RecordOp) -> tuple[Any, ...]:
    r, exact = storable_record(op.record or {})
    subject_uri, subject_cid = _strong_ref(r)
    return (
        op.uri, op.did, op.rkey, op.cid, op.rev, subject_uri, subject_cid, r, _datetime(r, "createdAt"),
        exact,
    )  # fmt: skip


def comment_row(op: RecordOp) -> tuple[Any, ...]:
    r, exact = storable_record(op.record or {})
    subject_uri, subject_cid = _strong_ref(r)
    ts = r["timestampMs"]  # any 64-bit integer >= 0 (lexicon): the column is bigint
    return (
        op.uri, op.did, op.rkey, op.cid, op.rev, subject_uri, subject_cid, r["text"], ts, r,
        _datetime(r, "createdAt"), _datetime(r, "updatedAt", required=False), exact,
    )  # fmt: skip


def list_row(op: RecordOp) -> tuple[tuple[Any, ...], list[tuple[str, str]]]:
    """The lists row and its items (subject uri, cid) in order."""
    r, exact = storable_record(op.record or {})
    raw_items = r.get("items")
    if not isinstance(raw_items, list):
        raise RowError("items is not an array")
    items: list[tuple[str, str]] = []
    for i, item in enumerate(raw_items):
        if not isinstance(item, dict):
            raise RowError(f"items[{i}] is not an object")
        items.append(_strong_ref(item))
    row = (
        op.uri, op.did, op.rkey, op.cid, op.rev, r.get("name"), r.get("listType"), len(items), r,
        _datetime(r, "createdAt"), _datetime(r, "updatedAt", required=False), exact,
    )  # fmt: skip
    return row, items


def profile_row(op: RecordOp) -> tuple[Any, ...]:
    r, exact = storable_record(op.record or {})
    return (
        op.uri, op.did, op.cid, op.rev, r.get("avatar"), r.get("bio"), r,
        _datetime(r, "createdAt"), _datetime(r, "updatedAt", required=False), exact,
    )  # fmt: skip
