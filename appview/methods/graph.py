"""fm.plyr.graph.*: lists (albums, playlists) with their tracks in order, and an actor's lists."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from appview import cursor
from appview.context import Call, Route, not_hidden, resolve_actor
from appview.errors import invalid_request, not_found
from appview.hydrate import artist_view, iso, with_labels
from appview.labels import labels_sql

# A list a moderation labeler removed is gone; removed tracks drop out of its items at
# hydration. `itemCount` is the record's own count of items, whatever became of them.
_LIST_COLS = f"""
SELECT li.uri, li.cid, li.did, li.name, li.list_type, li.item_count, li.created_at, li.indexed_at,
       li.sort_at, a.handle, a.display_name, coalesce(a.avatar_url, p.avatar_url) AS avatar,
       {labels_sql("li.uri", cid="li.cid")} AS labels, {labels_sql("li.did")} AS author_labels
FROM lists li
LEFT JOIN actors a ON a.did = li.did
LEFT JOIN profiles p ON p.did = li.did
WHERE {not_hidden("li.did")} AND NOT @removed(li.uri)
"""


def list_view(r: asyncpg.Record) -> dict[str, Any]:
    view: dict[str, Any] = {
        "uri": r["uri"],
        "cid": r["cid"],
        "author": artist_view(r["did"], r["handle"], r["display_name"], r["avatar"], r["author_labels"]),
        "itemCount": r["item_count"],
        "createdAt": iso(r["created_at"]),
        "indexedAt": iso(r["indexed_at"]),
    }
    if r["name"]:
        view["name"] = r["name"]
    if r["list_type"]:
        view["listType"] = r["list_type"]
    return with_labels(view, r["labels"])


async def get_list(call: Call) -> dict[str, Any]:
    p = call.params
    limit: int = p["limit"]
    row = await call.pool.fetchrow(call.sql(_LIST_COLS + " AND li.uri = $1"), p["uri"])
    if row is None:
        raise not_found("list not found")
    after = -1
    if "cursor" in p:
        (after,) = cursor.decode(p["cursor"], int)
        if not 0 <= after < 2**31:  # list positions are int4
            raise invalid_request("malformed cursor")
    # Removed tracks leave the page here (pages stay full); hydration drops the rest.
    items = await call.pool.fetch(
        call.sql(
            "SELECT position, subject_uri FROM list_items WHERE list_uri = $1 AND position > $2 "
            "AND NOT @removed(subject_uri) ORDER BY position LIMIT $3"
        ),
        p["uri"],
        after,
        limit,
    )
    tracks = await call.tracks([i["subject_uri"] for i in items])
    body: dict[str, Any] = {"list": list_view(row), "tracks": tracks}
    if len(items) == limit:
        body["cursor"] = cursor.encode(items[-1]["position"])
    return body


async def get_actor_lists(call: Call) -> dict[str, Any]:
    p = call.params
    did = await resolve_actor(call, p["actor"])
    limit: int = p["limit"]
    args: list[Any] = [did, limit]
    where = ""
    if "cursor" in p:
        args += list(cursor.decode(p["cursor"], datetime, str))
        where = "AND (li.sort_at, li.uri) < ($3, $4)"
    rows = await call.pool.fetch(
        call.sql(_LIST_COLS + f" AND li.did = $1 {where} ORDER BY li.sort_at DESC, li.uri DESC LIMIT $2"), *args
    )
    body: dict[str, Any] = {"lists": [list_view(r) for r in rows]}
    if len(rows) == limit:
        body["cursor"] = cursor.encode(rows[-1]["sort_at"], rows[-1]["uri"])
    return body


ROUTES: dict[str, Route] = {
    "fm.plyr.graph.getList": Route(get_list),
    "fm.plyr.graph.getActorLists": Route(get_actor_lists, auth="none"),
}
