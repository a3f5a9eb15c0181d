"""fm.plyr.play.recordPlay: a listener played a track.

Plays are events (the `plays` table). A play counts once per listener and track within the
dedupe window: one conditional upsert on `play_dedupe` decides, atomically under concurrent
requests, and the event row and the counters change in the same transaction.

This module is the only writer of `plays`, `play_counts` (per track) and `play_totals` (all
plays, spread over slots like the indexer's index_totals): `add_plays` is the one way in, for
requests and for `plyr seed-demo` alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from appview.context import Call, Route, not_hidden
from appview.errors import not_found
from core.db import Connection

_GATE = """
INSERT INTO play_dedupe AS d (listener_did, track_uri, last_counted_at) VALUES ($1, $2, now())
ON CONFLICT (listener_did, track_uri) DO UPDATE SET last_counted_at = excluded.last_counted_at
WHERE d.last_counted_at <= excluded.last_counted_at - make_interval(secs => $3)
RETURNING 1
"""

PLAY_TOTAL_SLOTS = 16  # rows of play_totals (migrations/0014_play_counts.sql)

# (track uri, artist did, listener did, duration ms or None, played at or None for now)
Play = tuple[str, str, str, int | None, datetime | None]

_ADD_PLAYS = f"""
WITH p AS (
  INSERT INTO plays (track_uri, artist_did, listener_did, duration_ms, played_at)
  SELECT u.track_uri, u.artist_did, u.listener_did, u.duration_ms, coalesce(u.played_at, now())
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::timestamptz[])
    AS u(track_uri, artist_did, listener_did, duration_ms, played_at)
  RETURNING track_uri
), c AS (
  INSERT INTO play_counts AS c (track_uri, play_count)
  SELECT track_uri, count(*) FROM p GROUP BY track_uri ORDER BY track_uri
  ON CONFLICT (track_uri) DO UPDATE SET play_count = c.play_count + excluded.play_count
  RETURNING c.track_uri, c.play_count
), t AS (
  INSERT INTO play_totals AS t (slot, plays)
  SELECT txid_current() % {PLAY_TOTAL_SLOTS}, count(*) FROM p
  ON CONFLICT (slot) DO UPDATE SET plays = t.plays + excluded.plays
)
SELECT track_uri, play_count FROM c
"""


async def add_plays(conn: Connection, plays: Sequence[Play]) -> dict[str, int]:
    """Store counted plays with their counters; returns the new play count of each track.
    Callers decide what counts (the dedupe gate) and run this in their transaction."""
    if not plays:
        return {}
    cols = [list(col) for col in zip(*plays, strict=True)]
    rows = await conn.fetch(_ADD_PLAYS, *cols)
    return {r["track_uri"]: int(r["play_count"]) for r in rows}


async def record_play(call: Call) -> dict[str, Any]:
    listener = call.viewer
    assert listener is not None  # the route requires auth
    track_uri: str = call.body["track"]
    duration_ms = call.body.get("durationMs")
    async with call.pool.acquire() as conn, conn.transaction():
        track = await conn.fetchrow(
            call.sql(f"SELECT t.uri, t.did FROM tracks t WHERE t.uri = $1 AND {not_hidden('t.did')} "
                     "AND NOT @removed(t.uri)"),
            track_uri,
        )
        if track is None:
            raise not_found("track not found")
        counted = await conn.fetchval(
            _GATE, listener, track_uri, float(call.state.settings.play_dedupe_seconds)
        )
        if counted:
            counts = await add_plays(conn, [(track_uri, track["did"], listener, duration_ms, None)])
            play_count = counts[track_uri]
        else:
            play_count = await conn.fetchval(
                "SELECT coalesce((SELECT play_count FROM play_counts WHERE track_uri = $1), 0)",
                track_uri,
            )
    return {"counted": bool(counted), "playCount": play_count}


_FORGET_LISTENER = f"""
WITH gone AS (
  DELETE FROM plays WHERE listener_did = $1 RETURNING track_uri
), per AS (
  SELECT track_uri, count(*) AS n FROM gone GROUP BY track_uri
), locked AS (
  -- in key order, as add_plays takes them: two erasures sharing tracks cannot deadlock
  SELECT pc.track_uri FROM play_counts pc JOIN per ON per.track_uri = pc.track_uri
  ORDER BY pc.track_uri FOR UPDATE OF pc
), c AS (
  UPDATE play_counts pc SET play_count = pc.play_count - per.n FROM per, locked
  WHERE pc.track_uri = per.track_uri AND locked.track_uri = per.track_uri
  RETURNING 1
), t AS (
  INSERT INTO play_totals AS t (slot, plays)
  SELECT txid_current() % {PLAY_TOTAL_SLOTS}, -count(*) FROM gone HAVING count(*) > 0
  ON CONFLICT (slot) DO UPDATE SET plays = t.plays + excluded.plays
), d AS (
  DELETE FROM play_dedupe WHERE listener_did = $1 RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS plays, (SELECT count(*) FROM d) AS dedupe,
       (SELECT count(*) FROM c) AS tracks
"""


async def forget_listener(conn: Connection, did: str) -> dict[str, int]:
    """Delete `did`'s plays as a listener and their dedupe gates, taking them off the per-track
    and platform counters (account data erasure, appview/erasure.py), in the caller's
    transaction. Plays of `did`'s own tracks by other listeners are theirs and stay."""
    row = await conn.fetchrow(_FORGET_LISTENER, did)
    assert row is not None
    return {"plays": int(row["plays"]), "playDedupe": int(row["dedupe"])}


ROUTES: dict[str, Route] = {"fm.plyr.play.recordPlay": Route(record_play, auth="required")}
