"""fm.plyr.viewer.*: the authenticated viewer's queue and preferences, with revisions.

A put names the revision it was based on. It applies only if that is still the current one
(compare-and-set in one statement); otherwise it is a 409 RevisionConflict and nothing changes.
A viewer who never saved anything is at revision 0.
"""

from __future__ import annotations

import logging
from typing import Any

from appview.client_json import client_json_problem
from appview.context import Call, Route
from appview.errors import XRPCError
from core.db import Connection

log = logging.getLogger("plyr.appview")

_DEFAULTS: dict[str, dict[str, Any]] = {"queue": {"items": []}, "preferences": {}}


async def _get(call: Call, kind: str) -> dict[str, Any]:
    row = await call.pool.fetchrow(
        "SELECT revision, value FROM viewer_state WHERE did = $1 AND kind = $2", call.viewer, kind
    )
    if row is None:
        return {kind: _DEFAULTS[kind], "revision": 0}
    value = row["value"]
    if client_json_problem(value, max_bytes=None) is not None:
        # Stored before puts were checked, and unservable (too deep to encode): answer the
        # default at the current revision so the viewer can replace it.
        log.warning("unservable viewer state", extra={"did": call.viewer, "kind": kind})
        value = _DEFAULTS[kind]
    return {kind: value, "revision": row["revision"]}


async def _put(call: Call, kind: str) -> dict[str, Any]:
    expected: int = call.body["revision"]
    value = call.body[kind]
    if expected == 0:
        revision = await call.pool.fetchval(
            "INSERT INTO viewer_state (did, kind, revision, value) VALUES ($1, $2, 1, $3) "
            "ON CONFLICT (did, kind) DO NOTHING RETURNING revision",
            call.viewer,
            kind,
            value,
        )
    else:
        revision = await call.pool.fetchval(
            "UPDATE viewer_state SET revision = revision + 1, value = $4, updated_at = now() "
            "WHERE did = $1 AND kind = $2 AND revision = $3 RETURNING revision",
            call.viewer,
            kind,
            expected,
            value,
        )
    if revision is None:
        current = await call.pool.fetchval(
            "SELECT revision FROM viewer_state WHERE did = $1 AND kind = $2", call.viewer, kind
        )
        raise XRPCError(
            409,
            "RevisionConflict",
            f"{kind} revision {expected} is stale (current revision is {current or 0}); "
            f"read it again and retry",
        )
    return {"revision": revision}


async def get_queue(call: Call) -> dict[str, Any]:
    return await _get(call, "queue")


async def put_queue(call: Call) -> dict[str, Any]:
    return await _put(call, "queue")


async def get_preferences(call: Call) -> dict[str, Any]:
    return await _get(call, "preferences")


async def put_preferences(call: Call) -> dict[str, Any]:
    return await _put(call, "preferences")


async def forget_viewer(conn: Connection, did: str) -> dict[str, int]:
    """Delete `did`'s queue and preferences (account data erasure, appview/erasure.py)."""
    rows = await conn.fetch("DELETE FROM viewer_state WHERE did = $1 RETURNING kind", did)
    kinds = [r["kind"] for r in rows]
    return {"queue": kinds.count("queue"), "preferences": kinds.count("preferences")}


ROUTES: dict[str, Route] = {
    "fm.plyr.viewer.getQueue": Route(get_queue, auth="required"),
    "fm.plyr.viewer.putQueue": Route(put_queue, auth="required"),
    "fm.plyr.viewer.getPreferences": Route(get_preferences, auth="required"),
    "fm.plyr.viewer.putPreferences": Route(put_preferences, auth="required"),
}
