"""fm.plyr.stats.*: platform totals, and plays over time for a track or an artist."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from appview.context import Call, Route, not_hidden, resolve_actor, uri_did
from appview.errors import not_found
from appview.hydrate import iso

# Totals are counters kept with the rows by their owners: index_totals by the indexer's writer
# (visible actors only), play_totals by appview/methods/plays.py. Each is a sum over a few slot
# rows; the result is still shared for stats_cache_seconds.
_PLATFORM = """
SELECT x.tracks, x.artists, x.duration, y.plays, x.likes, x.comments
FROM (SELECT coalesce(sum(tracks), 0) AS tracks, coalesce(sum(artists), 0) AS artists,
             coalesce(sum(track_seconds), 0) AS duration, coalesce(sum(likes), 0) AS likes,
             coalesce(sum(comments), 0) AS comments FROM index_totals) x,
     (SELECT coalesce(sum(plays), 0) AS plays FROM play_totals) y
"""


async def get_platform_stats(call: Call) -> dict[str, Any]:
    async def load() -> dict[str, Any]:
        row = await call.pool.fetchrow(_PLATFORM)
        assert row is not None  # scalar subqueries: always one row
        return {
            "tracks": int(row["tracks"]),
            "artists": int(row["artists"]),
            "plays": int(row["plays"]),
            "likes": int(row["likes"]),
            "comments": int(row["comments"]),
            "totalDurationSeconds": int(row["duration"]),
            "computedAt": iso(datetime.now(UTC)),
        }

    ttl = call.state.settings.stats_cache_seconds
    return dict(await call.state.stats_cache.get("platform", ttl, load, stale_for=10 * ttl))


_BUCKETS = """
SELECT date_trunc($2, played_at) AS bucket, count(*) AS n FROM plays
WHERE {column} = $1 AND played_at >= now() - make_interval(days => $3)
GROUP BY bucket ORDER BY bucket
"""


async def _buckets(call: Call, column: str, key: str) -> list[dict[str, Any]]:
    rows = await call.pool.fetch(
        _BUCKETS.format(column=column), key, call.params["interval"], call.params["days"]
    )
    return [{"time": iso(r["bucket"]), "count": r["n"]} for r in rows]


async def get_track_plays(call: Call) -> dict[str, Any]:
    uri = call.params["uri"]
    row = await call.pool.fetchrow(
        f"SELECT coalesce(c.play_count, 0) AS total FROM tracks t "
        f"LEFT JOIN play_counts c ON c.track_uri = t.uri WHERE t.uri = $1 AND {not_hidden('$2')}",
        uri,
        uri_did(uri),
    )
    if row is None:
        raise not_found("track not found")
    return {"uri": uri, "total": row["total"], "buckets": await _buckets(call, "track_uri", uri)}


async def get_artist_plays(call: Call) -> dict[str, Any]:
    did = await resolve_actor(call.pool, call.params["actor"], must_exist=True)
    total = await call.pool.fetchval(
        "SELECT coalesce(sum(c.play_count), 0) FROM tracks t "
        "JOIN play_counts c ON c.track_uri = t.uri WHERE t.did = $1",
        did,
    )
    return {"did": did, "total": int(total), "buckets": await _buckets(call, "artist_did", did)}


ROUTES: dict[str, Route] = {
    "fm.plyr.stats.getPlatformStats": Route(get_platform_stats, auth="none"),
    "fm.plyr.stats.getTrackPlays": Route(get_track_plays, auth="none"),
    "fm.plyr.stats.getArtistPlays": Route(get_artist_plays, auth="none"),
}
