"""Operators' actions: take down, restore, label, resolve reports. One code path for the
`fm.plyr.moderation.*` methods and `plyr admin`, on a database connection.

Each action is one transaction: the labels, signed and stored by the labeler's `emit_labels`
(the only writer of `own_labels`), the `moderation_actions` row (the audit log), and the
reports it resolves (linked to that row). Actions on one subject take a transaction lock on it,
so "is it already taken down?" is answered exactly however many moderators act at once.

Idempotent: an action leads to a label state, never to a second label for the same state.
Taking down a subject that already carries our active `!takedown` (for the same CID) signs
nothing; restoring a subject without one signs no negation; adding a label already active or
removing one that is not signs nothing. The action row is written all the same (what an operator
decided, and why); its `labels` are the values this action signed, empty when nothing changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from appview.labeler.store import LabelDraft, LabelSigner, emit_labels
from appview.moderation.subjects import ModerationError, Subject, check_label_value
from core.db import Connection
from protocol.labels import Label
from protocol.syntax.datetimes import parse_datetime

TAKEDOWN = "!takedown"
# classid of the per-subject transaction locks (two-int advisory lock space); "plym".
SUBJECT_LOCK_CLASS = 0x706C796D
MAX_REASON_CHARS = 2000  # an operator's reason or note, as the lexicons bound it
ACTIONS = ("takedown", "restore", "label", "unlabel", "resolve-reports")


@dataclass(frozen=True)
class Outcome:
    """What one action did: its audit row (as a view; None when there was nothing to do), the
    labels it signed, and how many open reports it resolved."""

    action: dict[str, Any] | None
    labels: list[Label] = field(default_factory=list)
    resolved_reports: int = 0


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def action_view(row: Any) -> dict[str, Any]:
    """fm.plyr.moderation.defs#actionView of a `moderation_actions` row."""
    view: dict[str, Any] = {
        "id": row["id"],
        "action": row["action"],
        "subject": row["subject"],
        "labels": list(row["labels"]),
        "reason": row["reason"],
        "moderator": row["moderator"],
        "createdAt": iso(row["created_at"]),
    }
    if row["subject_cid"] is not None:
        view["subjectCid"] = row["subject_cid"]
    return view


def _check_reason(reason: str, what: str = "reason") -> str:
    reason = reason.strip()
    if not reason:
        raise ModerationError(f"a {what} is required: the audit log says why")
    if len(reason) > MAX_REASON_CHARS:
        raise ModerationError(f"the {what} is longer than {MAX_REASON_CHARS} characters")
    return reason


def _lock_key(uri: str) -> int:
    return int.from_bytes(hashlib.blake2b(uri.encode(), digest_size=4).digest(), "big", signed=True)


async def _lock(conn: Connection, subject: Subject) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", SUBJECT_LOCK_CLASS, _lock_key(subject.uri))


async def active_labels(conn: Connection, uri: str, vals: list[str]) -> dict[str, str | None]:
    """Our labels among `vals` in force on `uri` (not negated, not expired): value -> its CID."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (val) val, neg, cid, exp FROM own_labels "
        "WHERE uri = $1 AND val = ANY($2::text[]) ORDER BY val, seq DESC",
        uri,
        vals,
    )
    now = datetime.now(UTC)
    return {
        r["val"]: r["cid"]
        for r in rows
        if not r["neg"] and (r["exp"] is None or parse_datetime(r["exp"]) > now)
    }


async def _record(
    conn: Connection, action: str, subject: Subject, labels: list[str], reason: str, moderator: str
) -> Any:
    return await conn.fetchrow(
        "INSERT INTO moderation_actions (action, subject, subject_cid, labels, reason, moderator) "
        "VALUES ($1, $2, $3, $4, $5, $6) "
        "RETURNING id, action, subject, subject_cid, labels, reason, moderator, created_at",
        action, subject.uri, subject.cid, labels, reason, moderator,
    )  # fmt: skip


async def _resolve(conn: Connection, subject: Subject, action_id: int, moderator: str, *, records_too: bool) -> int:
    """Close the open reports of `subject` (and, `records_too`, of the account's records)."""
    status = await conn.execute(
        "UPDATE reports SET resolved_at = now(), resolved_by = $2, action_id = $3 "
        "WHERE resolved_at IS NULL AND (subject = $1 OR ($4 AND starts_with(subject, $5)))",
        subject.uri, moderator, action_id, records_too, f"at://{subject.did}/",
    )  # fmt: skip
    return int(status.split()[-1])


async def takedown(
    conn: Connection, signer: LabelSigner, subject: Subject, *, reason: str, moderator: str
) -> Outcome:
    """`!takedown` on the subject, the action row, and its open reports resolved by it. An
    account's takedown resolves the reports of its records too: they leave every view with it."""
    reason = _check_reason(reason)
    async with conn.transaction():
        await _lock(conn, subject)
        active = await active_labels(conn, subject.uri, [TAKEDOWN])
        same = TAKEDOWN in active and active[TAKEDOWN] == subject.cid
        labels = [] if same else await emit_labels(conn, signer, [LabelDraft(subject.uri, TAKEDOWN, cid=subject.cid)])
        row = await _record(conn, "takedown", subject, [lb.val for lb in labels], reason, moderator)
        resolved = await _resolve(conn, subject, row["id"], moderator, records_too=subject.is_account)
    return Outcome(action_view(row), labels, resolved)


async def restore(
    conn: Connection, signer: LabelSigner, subject: Subject, *, reason: str, moderator: str
) -> Outcome:
    """The negation of our `!takedown` on the subject (when one is in force) and the action row."""
    reason = _check_reason(reason)
    async with conn.transaction():
        await _lock(conn, subject)
        active = await active_labels(conn, subject.uri, [TAKEDOWN])
        drafts = [LabelDraft(subject.uri, TAKEDOWN, cid=active[TAKEDOWN], neg=True)] if TAKEDOWN in active else []
        labels = await emit_labels(conn, signer, drafts) if drafts else []
        row = await _record(conn, "restore", subject, [lb.val for lb in labels], reason, moderator)
    return Outcome(action_view(row), labels)


async def set_labels(
    conn: Connection,
    signer: LabelSigner,
    subject: Subject,
    *,
    add: list[str],
    remove: list[str],
    reason: str,
    moderator: str,
) -> list[Outcome]:
    """Add and/or remove label values (`!warn`, `!hide`, `porn`, ...): one `label` and/or one
    `unlabel` action row. `!takedown` goes through takedown/restore (which resolve reports)."""
    reason = _check_reason(reason)
    add = list(dict.fromkeys(check_label_value(v) for v in add))
    remove = list(dict.fromkeys(check_label_value(v) for v in remove))
    if not add and not remove:
        raise ModerationError("nothing to do: give label values to add or remove")
    if TAKEDOWN in add or TAKEDOWN in remove:
        raise ModerationError("`!takedown` is set by takedown and removed by restore")
    if set(add) & set(remove):
        raise ModerationError(f"a value cannot be both added and removed: {sorted(set(add) & set(remove))}")
    outcomes: list[Outcome] = []
    async with conn.transaction():
        await _lock(conn, subject)
        active = await active_labels(conn, subject.uri, add + remove)
        if add:
            drafts = [LabelDraft(subject.uri, v, cid=subject.cid) for v in add
                      if not (v in active and active[v] == subject.cid)]  # fmt: skip
            labels = await emit_labels(conn, signer, drafts) if drafts else []
            row = await _record(conn, "label", subject, [lb.val for lb in labels], reason, moderator)
            outcomes.append(Outcome(action_view(row), labels))
        if remove:
            drafts = [LabelDraft(subject.uri, v, cid=active[v], neg=True) for v in remove if v in active]
            labels = await emit_labels(conn, signer, drafts) if drafts else []
            row = await _record(conn, "unlabel", subject, [lb.val for lb in labels], reason, moderator)
            outcomes.append(Outcome(action_view(row), labels))
    return outcomes


async def resolve_reports(conn: Connection, subject: Subject, *, note: str, moderator: str) -> Outcome:
    """Close the subject's open reports with no label (reviewed, nothing to act on): one
    `resolve-reports` action row. Nothing open: nothing written (action None)."""
    note = _check_reason(note, "note")
    async with conn.transaction():
        await _lock(conn, subject)
        pending = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM reports WHERE subject = $1 AND resolved_at IS NULL)", subject.uri
        )
        if not pending:
            return Outcome(None)
        row = await _record(conn, "resolve-reports", subject, [], note, moderator)
        resolved = await _resolve(conn, subject, row["id"], moderator, records_too=False)
    return Outcome(action_view(row), [], resolved)


async def list_actions(
    conn: Connection, *, limit: int, before: int | None = None, subject: str | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """The audit log, newest first: a page of action views and the id to continue before."""
    where: list[str] = []
    args: list[Any] = []
    if subject is not None:
        args.append(subject)
        where.append(f"subject = ${len(args)}")
    if before is not None:
        args.append(before)
        where.append(f"id < ${len(args)}")
    args.append(limit)
    rows = await conn.fetch(
        "SELECT id, action, subject, subject_cid, labels, reason, moderator, created_at FROM moderation_actions "
        + ("WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY id DESC LIMIT ${len(args)}",
        *args,
    )
    views = [action_view(r) for r in rows]
    return views, (rows[-1]["id"] if len(rows) == limit else None)
