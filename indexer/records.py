"""Record operations and how each `fm.plyr.*` record becomes a table row.

`RecordOp` is what every source (firehose, Jetstream, backfill, tests) hands to the writer: one
create/update/delete of one record, in JSON data-model form. The `*_row` functions turn a valid
record into the column values of its table; they raise `RowError` for shapes the lexicon allows
but the index cannot store (the writer dead-letters those like invalid records).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

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
    if op.collection == PROFILE and op.rkey != "self":
        return "fm.plyr.actor.profile record key must be 'self'"
    if op.action != "delete":
        if not isinstance(op.record, dict):
            return "create/update without a record"
        if not isinstance(op.cid, str) or not op.cid:
            return "create/update without a cid"
        record_type = op.record.get("$type")
        if record_type != op.collection:
            return f"record $type {record_type!r} does not match collection {op.collection}"
    return None


def _datetime(record: dict[str, Any], field: str, *, required: bool = True) -> datetime | None:
    value = record.get(field)
    if value is None and not required:
        return None
    try:
        return parse_datetime(value)  # type: ignore[arg-type]
    except (InvalidSyntax, TypeError) as exc:
        raise RowError(f"{field}: {exc}") from None


def _strong_ref(record: dict[str, Any], field: str = "subject") -> tuple[str, str]:
    ref = record.get(field)
    if not isinstance(ref, dict):
        raise RowError(f"{field} is not a strongRef")
    uri, cid = ref.get("uri"), ref.get("cid")
    if not isinstance(uri, str) or not isinstance(cid, str):
        raise RowError(f"{field} needs uri and cid strings")
    return uri, cid


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
    r = op.record or {}
    duration = r.get("duration")
    if duration is not None and not (isinstance(duration, int) and 0 <= duration < 2**31):
        raise RowError("duration out of range")
    return (
        op.uri, op.did, op.rkey, op.cid, op.rev,
        r["title"], r["artist"], r.get("album"), r.get("description"), r["fileType"],
        r.get("audioUrl"), _blob_cid(r.get("audioBlob")), r.get("imageUrl"), duration,
        orjson.dumps(_self_labels(r.get("labels"))).decode(), r, _datetime(r, "createdAt"),
    )  # fmt: skip


def like_row(op: RecordOp) -> tuple[Any, ...]:
    r = op.record or {}
    subject_uri, subject_cid = _strong_ref(r)
    return (
        op.uri, op.did, op.rkey, op.cid, op.rev, subject_uri, subject_cid, r, _datetime(r, "createdAt"),
    )  # fmt: skip


def comment_row(op: RecordOp) -> tuple[Any, ...]:
    r = op.record or {}
    subject_uri, subject_cid = _strong_ref(r)
    ts = r.get("timestampMs")
    if not isinstance(ts, int) or not 0 <= ts < 2**63:
        raise RowError("timestampMs out of range")
    return (
        op.uri, op.did, op.rkey, op.cid, op.rev, subject_uri, subject_cid, r["text"], ts, r,
        _datetime(r, "createdAt"), _datetime(r, "updatedAt", required=False),
    )  # fmt: skip


def list_row(op: RecordOp) -> tuple[tuple[Any, ...], list[tuple[str, str]]]:
    """The lists row and its items (subject uri, cid) in order."""
    r = op.record or {}
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
        _datetime(r, "createdAt"), _datetime(r, "updatedAt", required=False),
    )  # fmt: skip
    return row, items


def profile_row(op: RecordOp) -> tuple[Any, ...]:
    r = op.record or {}
    return (
        op.uri, op.did, op.cid, op.rev, r.get("avatar"), r.get("bio"), r,
        _datetime(r, "createdAt"), _datetime(r, "updatedAt", required=False),
    )  # fmt: skip
