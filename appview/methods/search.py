"""fm.plyr.search.*: trigram search (pg_trgm word similarity) over tracks (title and artist
name) and actors (handle and display name).

Matches are ranked by similarity; the cursor is a position in the ranking (searches are not
stable feeds, and a position is all a client needs to read further).
"""

from __future__ import annotations

from typing import Any

from appview import cursor
from appview.context import Call, Route, not_hidden
from appview.errors import invalid_request
from appview.hydrate import artist_view
from appview.labels import labels_sql

MAX_OFFSET = 1000


def _offset(call: Call) -> int:
    if "cursor" not in call.params:
        return 0
    (offset,) = cursor.decode(call.params["cursor"], int)
    if not 0 <= offset <= MAX_OFFSET:
        raise invalid_request("malformed cursor")
    return offset


# Word similarity (pg_trgm): `q <% text` keeps texts with a word close to the query, and
# `q <<-> text` (distance) orders them nearest first, straight from the GiST index of 0010.
# No tie-break column: one would turn the index walk into a sort of every match.
_TRACK_TEXT = "(t.title || ' ' || t.artist)"
_TRACKS = f"""
SELECT t.uri FROM tracks t
WHERE $1 <% {_TRACK_TEXT} AND {not_hidden("t.did")} AND NOT @removed(t.uri)
ORDER BY $1 <<-> {_TRACK_TEXT}
LIMIT $2 OFFSET $3
"""

_ACTOR_TEXT = "(coalesce(a.handle, '') || ' ' || coalesce(a.display_name, ''))"
_ACTORS = f"""
SELECT a.did, a.handle, a.display_name, a.avatar_url, {labels_sql("a.did")} AS labels FROM actors a
WHERE $1 <% {_ACTOR_TEXT} AND a.visible AND NOT @removed(a.did)
ORDER BY $1 <<-> {_ACTOR_TEXT}
LIMIT $2 OFFSET $3
"""


async def search_tracks(call: Call) -> dict[str, Any]:
    q = call.params["q"].strip()
    limit: int = call.params["limit"]
    offset = _offset(call)
    if not q:
        return {"tracks": []}
    rows = await call.pool.fetch(call.sql(_TRACKS), q, limit, offset)
    tracks = await call.tracks([r["uri"] for r in rows])
    body: dict[str, Any] = {"tracks": tracks}
    if len(rows) == limit and offset + limit <= MAX_OFFSET:
        body["cursor"] = cursor.encode(offset + limit)
    return body


async def search_actors(call: Call) -> dict[str, Any]:
    q = call.params["q"].strip().lower()
    limit: int = call.params["limit"]
    offset = _offset(call)
    if not q:
        return {"actors": []}
    rows = await call.pool.fetch(call.sql(_ACTORS), q, limit, offset)
    body: dict[str, Any] = {
        "actors": [artist_view(r["did"], r["handle"], r["display_name"], r["avatar_url"], r["labels"]) for r in rows]
    }
    if len(rows) == limit and offset + limit <= MAX_OFFSET:
        body["cursor"] = cursor.encode(offset + limit)
    return body


ROUTES: dict[str, Route] = {
    "fm.plyr.search.searchTracks": Route(search_tracks),
    "fm.plyr.search.searchActors": Route(search_actors, auth="none"),
}
