"""fm.plyr.actor.getProfile: an artist with their counts."""

from __future__ import annotations

from typing import Any

from appview.context import Call, Route, resolve_actor
from appview.errors import not_found
from appview.urls import servable_url

# The actor's own counters, kept by the indexer's writer with the rows (actor_counts); plays
# are summed over the actor's tracks from the plays module's counters (tracks_by_artist: a
# walk of that actor's index range, never a count of play rows).
_PROFILE = """
SELECT a.did, a.handle, a.display_name, coalesce(a.avatar_url, p.avatar_url) AS avatar, p.bio,
       coalesce(ac.track_count, 0) AS track_count, coalesce(ac.list_count, 0) AS list_count,
       coalesce(ac.like_count, 0) AS like_count,
       (SELECT coalesce(sum(pc.play_count), 0) FROM tracks t
          JOIN play_counts pc ON pc.track_uri = t.uri WHERE t.did = a.did) AS play_count
FROM actors a LEFT JOIN profiles p ON p.did = a.did LEFT JOIN actor_counts ac ON ac.did = a.did
WHERE a.did = $1 AND a.visible
"""


async def get_profile(call: Call) -> dict[str, Any]:
    actor: str = call.params["actor"]
    # A DID goes straight to the statement, which finds only known, visible actors: the same
    # answers as resolve_actor's, one round trip fewer.
    did = actor if actor.startswith("did:") else await resolve_actor(call.pool, actor, must_exist=True)
    row = await call.pool.fetchrow(_PROFILE, did)
    if row is None:
        raise not_found(f"actor not found: {call.params['actor']}")
    profile: dict[str, Any] = {
        "did": row["did"],
        "trackCount": int(row["track_count"]),
        "listCount": int(row["list_count"]),
        "likeCount": int(row["like_count"]),
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
