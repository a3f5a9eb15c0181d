"""fm.plyr.feed.*: track feeds, single tracks, likes and comments.

Every list is a skeleton query (the page's keys, in order, with cursor keys) followed by one
batched hydration: a fixed number of queries per page whatever its size. Skeletons leave out
what a moderation labeler removed (`@removed`, appview/labels.py), so pages stay full.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from appview import cursor
from appview.context import HIDDEN_SQL, Call, Route, not_hidden, resolve_actor, uri_did
from appview.errors import invalid_request, not_found
from appview.hydrate import (
    TRACK_JOINS_SQL,
    TRACK_VIEW_SQL,
    add_viewer_state,
    artist_view,
    iso,
    with_labels,
)
from appview.labels import labels_sql

# The newest tracks are read and hydrated in one statement (the hottest path of all)...
# (The view's SQL writes JSON braces: doubled here, for the `where` format below.)
_LATEST = f"""
SELECT t.uri, t.sort_at, {TRACK_VIEW_SQL.replace("{", "{{").replace("}", "}}")} AS view
FROM tracks t {TRACK_JOINS_SQL}
WHERE {{where}}
ORDER BY t.sort_at DESC, t.uri DESC LIMIT $1
"""
# ...or, with the view cache on, only their keys (an index-only scan of tracks_latest_keys,
# migrations/0011) and the views from the cache: a page whose tracks were served within the
# TTL costs this one small statement.
_LATEST_KEYS = """
SELECT t.uri, t.sort_at FROM tracks t
WHERE {where}
ORDER BY t.sort_at DESC, t.uri DESC LIMIT $1
"""


def _page_cursor(rows: list[Any], limit: int, *keys: str) -> str | None:
    """A cursor after the last row, when the page is full (there may be more)."""
    if len(rows) < limit:
        return None
    last = rows[-1]
    return cursor.encode(*(last[k] for k in keys))


def _paged(body: dict[str, Any], next_cursor: str | None) -> dict[str, Any]:
    if next_cursor:
        body["cursor"] = next_cursor
    return body


async def get_latest_tracks(call: Call) -> dict[str, Any]:
    p = call.params
    limit: int = p["limit"]
    args: list[Any] = [limit]
    where = f"{not_hidden('t.did')} AND NOT @removed(t.uri)"
    if "artist" in p:
        # The artist's visibility checked once, not per track: the walk of tracks_by_artist
        # then stops after `limit` rows instead of sorting the whole catalogue.
        args.append(p["artist"])
        where = f"t.did = ${len(args)} AND {not_hidden(f'${len(args)}')} AND NOT @removed(t.uri)"
    if "cursor" in p:
        sort_at, uri = cursor.decode(p["cursor"], datetime, str)
        args += [sort_at, uri]
        where += f" AND (t.sort_at, t.uri) < (${len(args) - 1}, ${len(args)})"
    if call.state.views.ttl > 0:
        rows = await call.pool.fetch(call.sql(_LATEST_KEYS.format(where=where)), *args)
        tracks = await call.tracks([r["uri"] for r in rows])
    else:
        rows = await call.pool.fetch(call.sql(_LATEST.format(where=where)), *args)
        tracks = [orjson.loads(r["view"]) for r in rows]  # JSON text (hydrate.TRACK_VIEW_SQL)
        if call.viewer is not None and tracks:
            await add_viewer_state(call.pool, tracks, call.viewer, call.state.likes)
    return _paged({"tracks": tracks}, _page_cursor(rows, limit, "sort_at", "uri"))


async def get_artist_tracks(call: Call) -> dict[str, Any]:
    # A DID needs no lookup first: the page's statement skips hidden artists, so only an empty
    # page asks whether the artist is hidden (NotFound) or just has no tracks.
    actor: str = call.params["actor"]
    did = actor if actor.startswith("did:") else await resolve_actor(call, actor)
    call.params = {**call.params, "artist": did}
    call.params.pop("actor")
    page = await get_latest_tracks(call)
    if not page["tracks"] and did is actor:
        await resolve_actor(call, did)
    return page


_PERIODS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}
_TOP_WINDOW = 1000  # how deep a period ranking goes

_TOP_ALL = f"""
SELECT c.subject_uri AS uri, c.like_count FROM track_counts c
JOIN tracks t ON t.uri = c.subject_uri
WHERE c.like_count > 0 AND {not_hidden("t.did")} AND NOT @removed(t.uri) {{where}}
ORDER BY c.like_count DESC, c.subject_uri DESC LIMIT $1
"""

# The one count over likes a read makes (docs/invariants.md 3): a ranking over a time window
# cannot be a kept counter; it reads a range of likes_by_time and is shared (top_cache_seconds).
# Removed tracks leave the ranking after it is cut (at most _TOP_WINDOW probes, not one per like:
# likers are checked for hiding only, their tracks' removal is what counts), and hydration drops
# any removed since it was computed.
_TOP_PERIOD = f"""
SELECT r.uri FROM (
  SELECT l.subject_uri AS uri, count(*) AS n FROM likes l
  WHERE l.sort_at >= now() - $1::interval AND NOT {HIDDEN_SQL.format(col="l.did")}
  GROUP BY l.subject_uri
  ORDER BY n DESC, l.subject_uri DESC LIMIT {_TOP_WINDOW}
) r
WHERE NOT @removed(r.uri)
ORDER BY r.n DESC, r.uri DESC
"""


async def get_top_tracks(call: Call) -> dict[str, Any]:
    p = call.params
    limit: int = p["limit"]
    period: str = p["period"]
    if period == "all":
        args: list[Any] = [limit]
        where = ""
        if "cursor" in p:
            count, uri = cursor.decode(p["cursor"], int, str)
            args += [count, uri]
            where = "AND (c.like_count, c.subject_uri) < ($2, $3)"
        rows = await call.pool.fetch(call.sql(_TOP_ALL.format(where=where)), *args)
        tracks = await call.tracks([r["uri"] for r in rows])
        return _paged({"tracks": tracks}, _page_cursor(rows, limit, "like_count", "uri"))

    # A period ranking is an aggregate over many likes: computed once per period and shared
    # for top_cache_seconds; the cursor is a position in it.
    async def load() -> list[str]:
        async with call.pool.acquire() as conn, conn.transaction():
            # An aggregate over many rows: JIT compilation would cost more than it saves.
            await conn.execute("SET LOCAL jit = off")
            rows = await conn.fetch(call.sql(_TOP_PERIOD), _PERIODS[period])
        return [r["uri"] for r in rows]

    ttl = call.state.settings.top_cache_seconds
    ranking: list[str] = await call.state.top_cache.get(("top", period), ttl, load, stale_for=10 * ttl)
    start = 0
    if "cursor" in p:
        (start,) = cursor.decode(p["cursor"], int)
        if not 0 <= start <= _TOP_WINDOW:
            raise invalid_request("malformed cursor")
    uris = ranking[start : start + limit]
    tracks = await call.tracks(uris)
    end = start + len(uris)
    return _paged({"tracks": tracks}, cursor.encode(end) if end < len(ranking) else None)


async def get_track(call: Call) -> dict[str, Any]:
    p = call.params
    if "uri" in p:
        tracks = await call.tracks([p["uri"]])
    elif "id" in p:
        uri = await call.pool.fetchval("SELECT uri FROM tracks WHERE short_id = $1", p["id"])
        tracks = await call.tracks([uri]) if uri else []
    else:
        raise invalid_request("give the track's uri or id")
    if not tracks:
        raise not_found("track not found")
    return {"track": tracks[0]}


async def get_tracks(call: Call) -> dict[str, Any]:
    return {"tracks": await call.tracks(call.params["uris"])}


# A removed track ($2, its artist $3) has no likes to show; a removed like or liker is left out.
_LIKES = f"""
SELECT l.uri, l.did, l.created_at, l.sort_at, a.handle, a.display_name,
       coalesce(a.avatar_url, pr.avatar_url) AS avatar,
       {labels_sql("l.uri", cid="l.cid")} AS labels, {labels_sql("l.did")} AS actor_labels
FROM likes l
LEFT JOIN actors a ON a.did = l.did
LEFT JOIN profiles pr ON pr.did = l.did
WHERE l.subject_uri = $2 AND coalesce(a.visible, true) AND NOT @removed(l.uri, l.did)
  AND {not_hidden("$3")} AND NOT @removed($2) {{where}}
ORDER BY l.sort_at DESC, l.uri DESC LIMIT $1
"""


async def get_likes(call: Call) -> dict[str, Any]:
    p = call.params
    limit: int = p["limit"]
    args: list[Any] = [limit, p["uri"], uri_did(p["uri"])]
    where = ""
    if "cursor" in p:
        args += list(cursor.decode(p["cursor"], datetime, str))
        where = "AND (l.sort_at, l.uri) < ($4, $5)"
    rows = await call.pool.fetch(call.sql(_LIKES.format(where=where)), *args)
    likes = [
        with_labels(
            {
                "uri": r["uri"],
                "actor": artist_view(r["did"], r["handle"], r["display_name"], r["avatar"], r["actor_labels"]),
                "createdAt": iso(r["created_at"]),
            },
            r["labels"],
        )
        for r in rows
    ]
    return _paged({"uri": p["uri"], "likes": likes}, _page_cursor(rows, limit, "sort_at", "uri"))


# The actor's visibility is checked in the same statement (a hidden actor has no rows); only
# an empty page of a DID, or a handle, needs resolve_actor's lookup.
_ACTOR_LIKES = f"""
SELECT l.uri, l.subject_uri, l.sort_at FROM likes l
WHERE l.did = $2 AND {not_hidden("$2")} AND NOT @removed(l.uri, l.subject_uri) {{where}}
ORDER BY l.sort_at DESC, l.uri DESC LIMIT $1
"""


async def get_actor_likes(call: Call) -> dict[str, Any]:
    p = call.params
    actor: str = p["actor"]
    did = actor if actor.startswith("did:") else await resolve_actor(call, actor)
    limit: int = p["limit"]
    args: list[Any] = [limit, did]
    where = ""
    if "cursor" in p:
        args += list(cursor.decode(p["cursor"], datetime, str))
        where = "AND (l.sort_at, l.uri) < ($3, $4)"
    rows = await call.pool.fetch(call.sql(_ACTOR_LIKES.format(where=where)), *args)
    if not rows and did is actor:
        await resolve_actor(call, did)  # NotFound when the actor is hidden
    tracks = await call.tracks([r["subject_uri"] for r in rows])
    return _paged({"tracks": tracks}, _page_cursor(rows, limit, "sort_at", "uri"))


# As for likes: nothing on a removed track; a removed comment or commenter is left out.
_COMMENTS = f"""
SELECT c.uri, c.cid, c.did, c.text, c.timestamp_ms, c.created_at, c.updated_at,
       a.handle, a.display_name, coalesce(a.avatar_url, pr.avatar_url) AS avatar,
       {labels_sql("c.uri", cid="c.cid")} AS labels, {labels_sql("c.did")} AS author_labels
FROM comments c
LEFT JOIN actors a ON a.did = c.did
LEFT JOIN profiles pr ON pr.did = c.did
WHERE c.subject_uri = $2 AND coalesce(a.visible, true) AND NOT @removed(c.uri, c.did)
  AND {not_hidden("$3")} AND NOT @removed($2) {{where}}
ORDER BY c.timestamp_ms, c.uri LIMIT $1
"""


async def get_comments(call: Call) -> dict[str, Any]:
    p = call.params
    limit: int = p["limit"]
    args: list[Any] = [limit, p["uri"], uri_did(p["uri"])]
    where = ""
    if "cursor" in p:
        args += list(cursor.decode(p["cursor"], int, str))
        where = "AND (c.timestamp_ms, c.uri) > ($4, $5)"
    rows = await call.pool.fetch(call.sql(_COMMENTS.format(where=where)), *args)
    comments = []
    for r in rows:
        view: dict[str, Any] = {
            "uri": r["uri"],
            "cid": r["cid"],
            "author": artist_view(r["did"], r["handle"], r["display_name"], r["avatar"], r["author_labels"]),
            "text": r["text"],
            "timestampMs": r["timestamp_ms"],
            "createdAt": iso(r["created_at"]),
        }
        if r["updated_at"] is not None:
            view["updatedAt"] = iso(r["updated_at"])
        comments.append(with_labels(view, r["labels"]))
    return _paged({"uri": p["uri"], "comments": comments}, _page_cursor(rows, limit, "timestamp_ms", "uri"))


ROUTES: dict[str, Route] = {
    "fm.plyr.feed.getLatestTracks": Route(get_latest_tracks),
    "fm.plyr.feed.getTopTracks": Route(get_top_tracks),
    "fm.plyr.feed.getArtistTracks": Route(get_artist_tracks),
    "fm.plyr.feed.getTrack": Route(get_track),
    "fm.plyr.feed.getTracks": Route(get_tracks),
    "fm.plyr.feed.getLikes": Route(get_likes, auth="none"),
    "fm.plyr.feed.getActorLikes": Route(get_actor_likes),
    "fm.plyr.feed.getComments": Route(get_comments, auth="none"),
}
