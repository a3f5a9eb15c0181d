"""fm.plyr.actor.getProfile: an artist with their counts."""

from __future__ import annotations

from typing import Any

from appview.context import Call, Route, resolve_actor
from appview.errors import not_found
from appview.urls import servable_url

# Per-actor counts walk that actor's index ranges only (tracks_by_artist, likes_by_actor,
# lists_by_actor): small, bounded work, no platform-wide COUNT.
_PROFILE = """
SELECT a.did, a.handle, a.display_name, coalesce(a.avatar_url, p.avatar_url) AS avatar, p.bio,
       (SELECT count(*) FROM tracks t WHERE t.did = a.did) AS track_count,
       (SELECT count(*) FROM lists li WHERE li.did = a.did) AS list_count,
       (SELECT count(*) FROM likes l WHERE l.did = a.did) AS like_count,
       (SELECT coalesce(sum(c.play_count), 0) FROM tracks t
          JOIN track_counts c ON c.subject_uri = t.uri WHERE t.did = a.did) AS play_count
FROM actors a LEFT JOIN profiles p ON p.did = a.did
WHERE a.did = $1 AND a.visible
"""


async def get_profile(call: Call) -> dict[str, Any]:
    did = await resolve_actor(call.pool, call.params["actor"], must_exist=True)
    row = await call.pool.fetchrow(_PROFILE, did)
    if row is None:
        raise not_found(f"actor not found: {call.params['actor']}")
    profile: dict[str, Any] = {
        "did": row["did"],
        "trackCount": row["track_count"],
        "listCount": row["list_count"],
        "likeCount": row["like_count"],
        "playCount": int(row["play_count"]),
    }
    for key, col in (("handle", "handle"), ("displayName", "display_name"), ("bio", "bio")):
        if row[col]:
            profile[key] = row[col]
    avatar = servable_url(row["avatar"])  # http(s) only: a record may say javascript:
    if avatar:
        profile["avatar"] = avatar
    return {"profile": profile}


ROUTES: dict[str, Route] = {"fm.plyr.actor.getProfile": Route(get_profile, auth="none")}
