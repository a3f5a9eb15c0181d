"""Users' reports (`com.atproto.moderation.createReport`) and the review queue: open reports
grouped by subject, oldest waiting first.

A report names an account (`com.atproto.admin.defs#repoRef`) or one version of a record
(`com.atproto.repo.strongRef`). Only what we could be showing is reportable: an account we
have indexed, or a record of one of our collections by such an account (the record itself may
already be gone: reports of deleted content still tell moderators about its author).
Each reporter may file `reports_per_hour` reports in any hour, counted from the rows themselves
under a per-reporter lock: exact across every AppView process, and kept across restarts.

The queue is grouped from the open reports on each read (the `reports_open` partial index): its
cost follows the number of open reports, which the reporters' limits and resolution keep small.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from appview.moderation.actions import iso
from appview.moderation.subjects import ModerationError, Subject, parse_subject
from core.db import Connection
from core.lexicons import LEXICONS_DIR

REPO_REF = "com.atproto.admin.defs#repoRef"
STRONG_REF = "com.atproto.repo.strongRef"
# classid of the per-reporter transaction locks; "plyr".
REPORTER_LOCK_CLASS = 0x706C7972
LATEST_PER_GROUP = 3  # the newest reports shown with each group of the queue


class ReportLimitExceeded(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} reports an hour: try again later")
        self.limit = limit


@functools.cache
def reason_types() -> frozenset[str]:
    """The reason types the lexicon knows (com.atproto.moderation.defs#reasonType)."""
    doc = orjson.loads((LEXICONS_DIR / "com/atproto/moderation/defs.json").read_bytes())
    return frozenset(doc["defs"]["reasonType"]["knownValues"])


@functools.cache
def _record_collections() -> frozenset[str]:
    """Our record types: the only collections a reported record may belong to."""
    collections = set()
    for path in (LEXICONS_DIR / "fm/plyr").rglob("*.json"):
        doc = orjson.loads(path.read_bytes())
        if doc.get("defs", {}).get("main", {}).get("type") == "record":
            collections.add(doc["id"])
    return frozenset(collections)


def subject_of(obj: dict[str, Any]) -> Subject:
    """A report's subject from its union member (a repoRef or a strongRef)."""
    kind = obj.get("$type")
    if kind == REPO_REF:
        return parse_subject(obj["did"])
    if kind == STRONG_REF:
        subject = parse_subject(obj["uri"], obj["cid"])
        if subject.is_account:
            raise ModerationError("a strongRef names a record: report an account with a repoRef")
        collection = subject.uri.split("/")[3]
        if collection not in _record_collections():
            raise ModerationError(f"{collection[:100]} records are not indexed here")
        return subject
    raise ModerationError(f"a report's subject is a {REPO_REF} or a {STRONG_REF}")


def subject_json(subject: Subject) -> dict[str, Any]:
    if subject.is_account:
        return {"$type": REPO_REF, "did": subject.uri}
    return {"$type": STRONG_REF, "uri": subject.uri, "cid": subject.cid}


def _reporter_key(did: str) -> int:
    return int.from_bytes(hashlib.blake2b(did.encode(), digest_size=4).digest(), "big", signed=True)


async def create_report(
    conn: Connection,
    *,
    reporter: str,
    reason_type: str,
    reason: str,
    subject: Subject,
    per_hour: int,
) -> dict[str, Any]:
    """Store one report; the createReport output. ModerationError for a subject or reason type
    we do not take, ReportLimitExceeded past the reporter's hourly budget."""
    if reason_type not in reason_types():
        raise ModerationError(f"unknown reasonType {reason_type[:200]!r}")
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM actors WHERE did = $1)", subject.did):
        raise ModerationError(f"{subject.did} is not an account indexed here")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", REPORTER_LOCK_CLASS, _reporter_key(reporter))
        # At most per_hour rows are read (the reports_by index): bounded whatever one files.
        recent = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM reports WHERE reported_by = $1 "
            "AND created_at > now() - interval '1 hour' LIMIT $2) r",
            reporter, per_hour,
        )  # fmt: skip
        if recent >= per_hour:
            raise ReportLimitExceeded(per_hour)
        row = await conn.fetchrow(
            "INSERT INTO reports (subject, subject_cid, reason_type, reason, reported_by) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id, created_at",
            subject.uri, subject.cid, reason_type, reason, reporter,
        )  # fmt: skip
        assert row is not None  # INSERT ... RETURNING: one row
    out: dict[str, Any] = {
        "id": row["id"],
        "reasonType": reason_type,
        "subject": subject_json(subject),
        "reportedBy": reporter,
        "createdAt": iso(row["created_at"]),
    }
    if reason:
        out["reason"] = reason
    return out


async def forget_reporter(conn: Connection, did: str) -> int:
    """Delete the reports `did` filed, open or resolved (account data erasure,
    appview/erasure.py); returns how many. What moderators did about them stays in
    `moderation_actions` (the audit log names subjects and moderators, not reporters)."""
    status: str = await conn.execute("DELETE FROM reports WHERE reported_by = $1", did)
    return int(status.split()[-1])


@dataclass(frozen=True)
class QueueCursor:
    first_at: datetime
    subject: str


_GROUPS_SQL = """
SELECT subject, count(*) AS n, count(DISTINCT reported_by) AS reporters,
       min(created_at) AS first_at, max(created_at) AS last_at,
       array_agg(DISTINCT reason_type ORDER BY reason_type) AS reason_types
FROM reports
WHERE resolved_at IS NULL
GROUP BY subject
{having}
ORDER BY first_at, subject
LIMIT $1
"""

_LATEST_SQL = """
SELECT id, subject, subject_cid, reason_type, reason, reported_by, created_at
FROM (
    SELECT r.*, row_number() OVER (PARTITION BY subject ORDER BY created_at DESC, id DESC) AS k
    FROM reports r
    WHERE subject = ANY($1::text[]) AND resolved_at IS NULL
) latest
WHERE k <= $2
ORDER BY subject, created_at DESC, id DESC
"""


def report_view(row: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row["id"],
        "reasonType": row["reason_type"],
        "reportedBy": row["reported_by"],
        "createdAt": iso(row["created_at"]),
    }
    if row["reason"]:
        view["reason"] = row["reason"]
    if row["subject_cid"] is not None:
        view["subjectCid"] = row["subject_cid"]
    return view


async def list_report_groups(
    conn: Connection, *, limit: int, after: QueueCursor | None = None
) -> tuple[list[dict[str, Any]], QueueCursor | None]:
    """A page of the review queue (fm.plyr.moderation.defs#reportGroupView), the subject
    waiting longest first; and where the next page starts. A group leaves the queue when its
    reports are resolved; reports arriving later on it join it (its first report stays)."""
    if after is None:
        rows = await conn.fetch(_GROUPS_SQL.format(having=""), limit)
    else:
        rows = await conn.fetch(
            _GROUPS_SQL.format(having="HAVING (min(created_at), subject) > ($2, $3)"),
            limit, after.first_at, after.subject,
        )  # fmt: skip
    latest: dict[str, list[dict[str, Any]]] = {}
    if rows:
        for r in await conn.fetch(_LATEST_SQL, [r["subject"] for r in rows], LATEST_PER_GROUP):
            latest.setdefault(r["subject"], []).append(report_view(r))
    groups = [
        {
            "subject": r["subject"],
            "subjectType": "account" if r["subject"].startswith("did:") else "record",
            "count": r["n"],
            "reporterCount": r["reporters"],
            "firstReportedAt": iso(r["first_at"]),
            "lastReportedAt": iso(r["last_at"]),
            "reasonTypes": list(r["reason_types"]),
            "latest": latest.get(r["subject"], []),
        }
        for r in rows
    ]
    following = QueueCursor(rows[-1]["first_at"], rows[-1]["subject"]) if len(rows) == limit else None
    return groups, following
