"""fm.plyr.stats.*: platform totals, and plays over time for a track or an artist, with the
network plays (teal.fm records) that name them beside ours, each labelled with how it was
counted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from appview.context import Call, Route, not_hidden, resolve_actor, uri_did
from appview.errors import not_found
from appview.hydrate import iso
from appview.labels import REMOVED_TOTALS_SQL

# Totals are counters kept with the rows by their owners: index_totals by the indexer's writer
# (visible actors only), play_totals by appview/methods/plays.py. Each is a sum over a few slot
# rows; the result is still shared for stats_cache_seconds. Counters hold every row: what a
# moderation labeler removed is subtracted (REMOVED_TOTALS_SQL).
_PLATFORM = f"""
WITH {REMOVED_TOTALS_SQL}
SELECT x.tracks - g.tracks AS tracks, x.artists - g.artists AS artists,
       x.duration - g.duration AS duration, y.plays - g.plays AS plays,
       x.likes - g.likes AS likes, x.comments - g.comments AS comments
FROM (SELECT coalesce(sum(tracks), 0) AS tracks, coalesce(sum(artists), 0) AS artists,
             coalesce(sum(track_seconds), 0) AS duration, coalesce(sum(likes), 0) AS likes,
             coalesce(sum(comments), 0) AS comments FROM index_totals) x,
     (SELECT coalesce(sum(plays), 0) AS plays FROM play_totals) y,
     gone_totals g
"""


async def get_platform_stats(call: Call) -> dict[str, Any]:
    async def load() -> dict[str, Any]:
        row = await call.pool.fetchrow(call.sql(_PLATFORM))
        assert row is not None  # scalar subqueries: always one row
        return {
            "tracks": max(0, int(row["tracks"])),
            "artists": max(0, int(row["artists"])),
            "plays": max(0, int(row["plays"])),
            "likes": max(0, int(row["likes"])),
            "comments": max(0, int(row["comments"])),
            "totalDurationSeconds": max(0, int(row["duration"])),
            "computedAt": iso(datetime.now(UTC)),
        }

    ttl = call.state.settings.stats_cache_seconds
    return dict(await call.state.stats_cache.get("platform", ttl, load, stale_for=10 * ttl))


# An artist's series leaves out the plays of their removed tracks (a few URIs, read once).
_BUCKETS = """
SELECT date_trunc($2, played_at) AS bucket, count(*) AS n FROM plays
WHERE {column} = $1 AND played_at >= now() - make_interval(days => $3) {extra}
GROUP BY bucket ORDER BY bucket
"""
_NOT_REMOVED_TRACK = (
    "AND track_uri <> ALL(ARRAY(SELECT t.uri FROM tracks t WHERE t.did = $1 AND t.uri IN @removed_uris))"
)


async def _buckets(call: Call, column: str, key: str) -> list[dict[str, Any]]:
    extra = _NOT_REMOVED_TRACK if column == "artist_did" else ""
    rows = await call.pool.fetch(
        call.sql(_BUCKETS.format(column=column, extra=extra)), key, call.params["interval"], call.params["days"]
    )
    return [{"time": iso(r["bucket"]), "count": r["n"]} for r in rows]


def _counted(plays: int, network: int, by_url: int) -> dict[str, Any]:
    """The two figures side by side, each saying how it was counted (fm.plyr.stats.defs)."""
    network, by_url = max(0, network), max(0, min(by_url, network))
    return {
        "plays": {"count": max(0, plays), "countedBy": "plyr"},
        "networkPlays": {
            "count": network, "countedBy": "teal.fm records", "byUrl": by_url, "byMetadata": network - by_url,
        },
    }  # fmt: skip


# Network plays (teal.fm records in listeners' repos, matched to our tracks by the indexer:
# indexer/writer/network_match.py) are counters beside ours, read in the same statement.
_TRACK_TOTALS = f"""
SELECT coalesce(c.play_count, 0) AS total, coalesce(n.play_count, 0) AS network,
       coalesce(n.url_count, 0) AS by_url
FROM tracks t LEFT JOIN play_counts c ON c.track_uri = t.uri
LEFT JOIN network_play_counts n ON n.track_uri = t.uri
WHERE t.uri = $1 AND {not_hidden('$2')} AND NOT @removed(t.uri)
"""
_ARTIST_TOTALS = """
SELECT coalesce(sum(c.play_count), 0) AS total, coalesce(sum(n.play_count), 0) AS network,
       coalesce(sum(n.url_count), 0) AS by_url
FROM tracks t LEFT JOIN play_counts c ON c.track_uri = t.uri
LEFT JOIN network_play_counts n ON n.track_uri = t.uri
WHERE t.did = $1 AND NOT (t.uri IN @removed_uris)
"""


async def get_track_plays(call: Call) -> dict[str, Any]:
    uri = call.params["uri"]
    row = await call.pool.fetchrow(call.sql(_TRACK_TOTALS), uri, uri_did(uri))
    if row is None:
        raise not_found("track not found")
    return {
        "uri": uri, "total": row["total"], "buckets": await _buckets(call, "track_uri", uri),
        **_counted(int(row["total"]), int(row["network"]), int(row["by_url"])),
    }  # fmt: skip


async def get_artist_plays(call: Call) -> dict[str, Any]:
    did = await resolve_actor(call, call.params["actor"], must_exist=True)
    row = await call.pool.fetchrow(call.sql(_ARTIST_TOTALS), did)
    assert row is not None  # aggregates: always one row
    return {
        "did": did, "total": int(row["total"]), "buckets": await _buckets(call, "artist_did", did),
        **_counted(int(row["total"]), int(row["network"]), int(row["by_url"])),
    }  # fmt: skip


ROUTES: dict[str, Route] = {
    "fm.plyr.stats.getPlatformStats": Route(get_platform_stats, auth="none"),
    "fm.plyr.stats.getTrackPlays": Route(get_track_plays, auth="none"),
    "fm.plyr.stats.getArtistPlays": Route(get_artist_plays, auth="none"),
}
