"""fm.plyr.play.recordPlay: a listener played a track.

Plays are events (the `plays` table). A play counts once per listener and track within the
dedupe window: one conditional upsert on `play_dedupe` decides, atomically under concurrent
requests, and the event row and the track's play_count change in the same transaction.
"""

from __future__ import annotations

from typing import Any

from appview.context import Call, Route, not_hidden
from appview.errors import not_found

_GATE = """
INSERT INTO play_dedupe AS d (listener_did, track_uri, last_counted_at) VALUES ($1, $2, now())
ON CONFLICT (listener_did, track_uri) DO UPDATE SET last_counted_at = excluded.last_counted_at
WHERE d.last_counted_at <= excluded.last_counted_at - make_interval(secs => $3)
RETURNING 1
"""

_BUMP = """
INSERT INTO track_counts (subject_uri, play_count) VALUES ($1, 1)
ON CONFLICT (subject_uri) DO UPDATE SET play_count = track_counts.play_count + 1
RETURNING play_count
"""


async def record_play(call: Call) -> dict[str, Any]:
    listener = call.viewer
    assert listener is not None  # the route requires auth
    track_uri: str = call.body["track"]
    duration_ms = call.body.get("durationMs")
    async with call.pool.acquire() as conn, conn.transaction():
        track = await conn.fetchrow(
            f"SELECT t.uri, t.did FROM tracks t WHERE t.uri = $1 AND {not_hidden('t.did')}", track_uri
        )
        if track is None:
            raise not_found("track not found")
        counted = await conn.fetchval(
            _GATE, listener, track_uri, float(call.state.settings.play_dedupe_seconds)
        )
        if counted:
            await conn.execute(
                "INSERT INTO plays (track_uri, artist_did, listener_did, duration_ms) "
                "VALUES ($1, $2, $3, $4)",
                track_uri,
                track["did"],
                listener,
                duration_ms,
            )
            play_count = await conn.fetchval(_BUMP, track_uri)
        else:
            play_count = await conn.fetchval(
                "SELECT coalesce((SELECT play_count FROM track_counts WHERE subject_uri = $1), 0)",
                track_uri,
            )
    return {"counted": bool(counted), "playCount": play_count}


ROUTES: dict[str, Route] = {"fm.plyr.play.recordPlay": Route(record_play, auth="required")}
