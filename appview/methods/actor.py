"""fm.plyr.actor.getProfile: an artist with their counts."""

from __future__ import annotations

from typing import Any

from appview.context import Call, Route, resolve_actor
from appview.errors import not_found
from appview.hydrate import with_labels
from appview.labels import labels_sql
from appview.urls import servable_url

# The actor's own counters, kept by the indexer's writer with the rows (actor_counts); plays
# are summed over the actor's tracks from the plays module's counters (tracks_by_artist: a
# walk of that actor's index range, never a count of play rows). Counters hold every track: the
# few a moderation labeler removed (`gone`, found from labels_removing) are subtracted here,
# from the track count and from the plays.
_PROFILE = f"""
WITH gone AS (
  SELECT coalesce(pc.play_count, 0) AS plays FROM tracks t
  LEFT JOIN play_counts pc ON pc.track_uri = t.uri
  WHERE t.did = $1 AND t.uri IN @removed_uris
)
SELECT a.did, a.handle, a.display_name, coalesce(a.avatar_url, p.avatar_url) AS avatar, p.bio,
       coalesce(ac.track_count, 0) - (SELECT count(*) FROM gone) AS track_count,
       coalesce(ac.list_count, 0) AS list_count, coalesce(ac.like_count, 0) AS like_count,
       (SELECT coalesce(sum(pc.play_count), 0) FROM tracks t
          JOIN play_counts pc ON pc.track_uri = t.uri WHERE t.did = a.did)
         - (SELECT coalesce(sum(plays), 0) FROM gone) AS play_count,
       {labels_sql("a.did")} AS labels, {labels_sql("p.uri", cid="p.cid")} AS profile_labels
FROM actors a LEFT JOIN profiles p ON p.did = a.did LEFT JOIN actor_counts ac ON ac.did = a.did
WHERE a.did = $1 AND a.visible AND NOT @removed(a.did)
"""


async def get_profile(call: Call) -> dict[str, Any]:
    actor: str = call.params["actor"]
    # A DID goes straight to the statement, which finds only known, visible actors: the same
    # answers as resolve_actor's, one round trip fewer.
    did = actor if actor.startswith("did:") else await resolve_actor(call, actor, must_exist=True)
    row = await call.pool.fetchrow(call.sql(_PROFILE), did)
    if row is None:
        raise not_found(f"actor not found: {call.params['actor']}")
    profile: dict[str, Any] = {
        "did": row["did"],
        "trackCount": max(0, int(row["track_count"])),
        "listCount": int(row["list_count"]),
        "likeCount": int(row["like_count"]),
        "playCount": max(0, int(row["play_count"])),
    }
    for key, col in (("handle", "handle"), ("displayName", "display_name"), ("bio", "bio")):
        if row[col]:
            profile[key] = row[col]
    avatar = servable_url(row["avatar"])  # http(s) only: a record may say javascript:
    if avatar:
        profile["avatar"] = avatar
    # The account's labels and its profile record's (appview/labels.py keeps the request's).
    return {"profile": with_labels(profile, (row["labels"] or []) + (row["profile_labels"] or []))}


ROUTES: dict[str, Route] = {"fm.plyr.actor.getProfile": Route(get_profile, auth="none")}
