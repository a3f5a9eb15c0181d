"""The moderation XRPC methods: `fm.plyr.moderation.*` for moderators, and
`com.atproto.moderation.createReport` for everyone.

Every method needs service auth (401 without it, as the dispatcher answers). The
`fm.plyr.moderation.*` methods then need the caller's DID in PLYR_MODERATORS (403 otherwise).
The handlers only translate: the work is in actions.py and reports.py, which `plyr admin` calls
too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from appview import cursor
from appview.context import Call, Route
from appview.errors import XRPCError, invalid_request
from appview.labeler.store import LabelSigner
from appview.moderation import actions, copyright, reports
from appview.moderation.subjects import ModerationError, parse_subject

log = logging.getLogger("plyr.moderation")

NS = "fm.plyr.moderation."
Handler = Callable[[Call], Awaitable[dict[str, Any]]]


def moderator_only(handler: Handler) -> Handler:
    """Refuse callers not in the allow-list; a caller's mistakes become 400s."""

    async def guarded(call: Call) -> dict[str, Any]:
        if call.viewer not in call.state.settings.moderators:
            raise XRPCError(403, "Forbidden", "this method is for moderators (PLYR_MODERATORS)")
        try:
            return await handler(call)
        except ModerationError as exc:
            raise invalid_request(str(exc)) from None

    return guarded


def _signer(call: Call) -> LabelSigner:
    if call.state.labeler is None:
        raise XRPCError(503, "LabelerNotConfigured", "no labeler signing key is configured (PLYR_LABELER_KEY)")
    return call.state.labeler


def _labels_json(outcomes: list[actions.Outcome]) -> list[dict[str, Any]]:
    return [label.to_json() for o in outcomes for label in o.labels]


async def takedown(call: Call) -> dict[str, Any]:
    subject = parse_subject(call.body["subject"], call.body.get("cid"))
    signer = _signer(call)
    async with call.pool.acquire() as conn:
        done = await actions.takedown(conn, signer, subject, reason=call.body["reason"], moderator=call.viewer or "")
    log.info("takedown", extra={"subject": subject.uri, "moderator": call.viewer,
                                "action_id": (done.action or {}).get("id")})
    return {"action": done.action, "labels": _labels_json([done]), "resolvedReports": done.resolved_reports}


async def restore(call: Call) -> dict[str, Any]:
    subject = parse_subject(call.body["subject"], call.body.get("cid"))
    signer = _signer(call)
    async with call.pool.acquire() as conn:
        done = await actions.restore(conn, signer, subject, reason=call.body["reason"], moderator=call.viewer or "")
    log.info("restore", extra={"subject": subject.uri, "moderator": call.viewer,
                                "action_id": (done.action or {}).get("id")})
    return {"action": done.action, "labels": _labels_json([done])}


async def label(call: Call) -> dict[str, Any]:
    subject = parse_subject(call.body["subject"], call.body.get("cid"))
    signer = _signer(call)
    async with call.pool.acquire() as conn:
        done = await actions.set_labels(
            conn, signer, subject, add=call.body.get("add", []), remove=call.body.get("remove", []),
            reason=call.body["reason"], moderator=call.viewer or "",
        )  # fmt: skip
    return {"actions": [o.action for o in done], "labels": _labels_json(done)}


async def resolve_reports(call: Call) -> dict[str, Any]:
    subject = parse_subject(call.body["subject"])
    async with call.pool.acquire() as conn:
        done = await actions.resolve_reports(conn, subject, note=call.body["note"], moderator=call.viewer or "")
    out: dict[str, Any] = {"resolvedReports": done.resolved_reports}
    if done.action is not None:
        out["action"] = done.action
    return out


async def list_actions(call: Call) -> dict[str, Any]:
    p = call.params
    before = cursor.decode(p["cursor"], int)[0] if "cursor" in p else None
    subject = parse_subject(p["subject"]).uri if "subject" in p else None
    async with call.pool.acquire() as conn:
        views, last = await actions.list_actions(conn, limit=p["limit"], before=before, subject=subject)
    out: dict[str, Any] = {"actions": views}
    if last is not None:
        out["cursor"] = cursor.encode(last)
    return out


async def list_reports(call: Call) -> dict[str, Any]:
    p = call.params
    after = None
    if "cursor" in p:
        first_at, subject = cursor.decode(p["cursor"], datetime, str)
        after = reports.QueueCursor(first_at, subject)
    async with call.pool.acquire() as conn:
        groups, following = await reports.list_report_groups(conn, limit=p["limit"], after=after)
    out: dict[str, Any] = {"groups": groups}
    if following is not None:
        out["cursor"] = cursor.encode(following.first_at, following.subject)
    return out


async def list_scans(call: Call) -> dict[str, Any]:
    p = call.params
    before = cursor.decode(p["cursor"], int)[0] if "cursor" in p else None
    async with call.pool.acquire() as conn:
        views, last = await copyright.list_scans(conn, limit=p["limit"], before=before, status=p.get("status"),
                                                 unreviewed=p.get("unreviewed", False))  # fmt: skip
    out: dict[str, Any] = {"scans": views}
    if last is not None:
        out["cursor"] = cursor.encode(last)
    return out


async def resolve_scan(call: Call) -> dict[str, Any]:
    body = call.body
    try:
        async with call.pool.acquire() as conn:
            done = await copyright.resolve_scan(
                conn, call.state.labeler, scan_id=body["scan"], resolution=body["resolution"], note=body["note"],
                reviewer=call.viewer or "", tracks=body.get("tracks"),
            )  # fmt: skip
    except copyright.LabelerMissing as exc:
        raise XRPCError(503, "LabelerNotConfigured", str(exc)) from None
    log.info("copyright scan resolved", extra={"scan": body["scan"], "resolution": body["resolution"],
                                               "moderator": call.viewer, "review": done.review["id"]})  # fmt: skip
    return {"review": done.review, "actions": done.actions, "labels": [lb.to_json() for lb in done.labels],
            "allowlisted": done.allowlisted}  # fmt: skip


async def create_report(call: Call) -> dict[str, Any]:
    reporter = call.viewer
    assert reporter is not None  # the route requires auth
    body = call.body
    try:
        subject = reports.subject_of(body["subject"])
        async with call.pool.acquire() as conn:
            return await reports.create_report(
                conn, reporter=reporter, reason_type=body["reasonType"], reason=body.get("reason", ""),
                subject=subject, per_hour=call.state.settings.reports_per_hour,
            )  # fmt: skip
    except ModerationError as exc:
        raise invalid_request(str(exc)) from None
    except reports.ReportLimitExceeded as exc:
        raise XRPCError(429, "RateLimitExceeded", str(exc)) from None


# Reports reach a labeler through a PDS as `<our DID>#atproto_labeler` (a client that chose us
# as its labeler), besides our AppView identity (appview/auth.py).
OTHER_AUDIENCES = {"com.atproto.moderation.createReport": "#atproto_labeler"}

ROUTES: dict[str, Route] = {
    NS + "takedown": Route(moderator_only(takedown), auth="required"),
    NS + "restore": Route(moderator_only(restore), auth="required"),
    NS + "label": Route(moderator_only(label), auth="required"),
    NS + "resolveReports": Route(moderator_only(resolve_reports), auth="required"),
    NS + "listActions": Route(moderator_only(list_actions), auth="required"),
    NS + "listReports": Route(moderator_only(list_reports), auth="required"),
    NS + "listScans": Route(moderator_only(list_scans), auth="required"),
    NS + "resolveScan": Route(moderator_only(resolve_scan), auth="required"),
    "com.atproto.moderation.createReport": Route(create_report, auth="required"),
}
