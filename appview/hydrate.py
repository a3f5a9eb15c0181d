"""Views: turn index rows into the lexicon view objects (fm.plyr.defs), in batches.

A page of tracks is hydrated by one query over `uri = ANY($1)` (track, artist, counts) plus,
for an authenticated viewer, one more for their likes: the query count does not grow with the
page. Tracks of hidden actors (actors.visible = false) never come out of here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

# One track view (fm.plyr.defs#trackView) built by Postgres as JSON: the rows never become
# Python objects column by column, which is most of the cost of a page in Python. Absent optional
# fields are NULL and stripped; times are UTC RFC 3339 with microseconds.
_TIME = """to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
TRACK_VIEW_SQL = f"""
json_strip_nulls(json_build_object(
  'uri', t.uri, 'cid', t.cid, 'id', t.short_id, 'title', t.title, 'artist', t.artist,
  'album', nullif(t.album, ''), 'description', nullif(t.description, ''),
  'author', json_build_object('did', t.did, 'handle', nullif(a.handle, ''),
                              'displayName', nullif(a.display_name, ''),
                              'avatar', nullif(coalesce(a.avatar_url, p.avatar_url), '')),
  'fileType', t.file_type,
  'audioUrl', CASE
      WHEN t.audio_url <> '' THEN t.audio_url
      WHEN t.audio_blob_cid IS NOT NULL AND a.pds_url <> '' THEN
        rtrim(a.pds_url, '/') || '/xrpc/com.atproto.sync.getBlob?did=' || t.did
        || '&cid=' || t.audio_blob_cid
    END,
  'imageUrl', nullif(t.image_url, ''), 'duration', t.duration_s,
  'likeCount', coalesce(c.like_count, 0), 'commentCount', coalesce(c.comment_count, 0),
  'playCount', coalesce(c.play_count, 0), 'labels', to_json(t.labels),
  'createdAt', {_TIME.format(col="t.created_at")}, 'indexedAt', {_TIME.format(col="t.indexed_at")}
))"""

# The joins a track view needs; `t` must be a tracks row. Hidden artists drop out here.
TRACK_JOINS_SQL = """
LEFT JOIN actors a ON a.did = t.did
LEFT JOIN profiles p ON p.did = t.did
LEFT JOIN track_counts c ON c.subject_uri = t.uri
"""

_TRACKS_SQL = f"""
SELECT t.uri, {TRACK_VIEW_SQL} AS view
FROM tracks t {TRACK_JOINS_SQL}
WHERE t.uri = ANY($1::text[]) AND coalesce(a.visible, true)
"""

_VIEWER_LIKES_SQL = """
SELECT DISTINCT ON (subject_uri) subject_uri, uri FROM likes
WHERE did = $1 AND subject_uri = ANY($2::text[])
ORDER BY subject_uri, sort_at DESC
"""


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def artist_view(did: str, handle: str | None, display_name: str | None, avatar: str | None) -> dict[str, Any]:
    view: dict[str, Any] = {"did": did}
    if handle:
        view["handle"] = handle
    if display_name:
        view["displayName"] = display_name
    if avatar:
        view["avatar"] = avatar
    return view


async def hydrate_tracks(
    conn: asyncpg.Connection | asyncpg.Pool, uris: Sequence[str], viewer: str | None
) -> list[dict[str, Any]]:
    """Track views for `uris`, in that order; unknown tracks and hidden artists are left out."""
    if not uris:
        return []
    views = {r["uri"]: r["view"] for r in await conn.fetch(_TRACKS_SQL, list(uris))}
    ordered = [views[u] for u in dict.fromkeys(uris) if u in views]
    if viewer is not None and ordered:
        await add_viewer_state(conn, ordered, viewer)
    return ordered


async def add_viewer_state(
    conn: asyncpg.Connection | asyncpg.Pool, views: list[dict[str, Any]], viewer: str
) -> None:
    liked = {
        r["subject_uri"]: r["uri"]
        for r in await conn.fetch(_VIEWER_LIKES_SQL, viewer, [v["uri"] for v in views])
    }
    for view in views:
        like = liked.get(view["uri"])
        view["viewer"] = {"like": like} if like else {}
