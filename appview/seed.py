"""`plyr seed-demo`: a realistic synthetic index, generated inside Postgres (generate_series),
never row by row from Python.

Shapes that matter for the read paths: artists with skewed catalogue sizes, likes, comments
and plays concentrated on popular tracks (a power law), times spread over a year with every
like/comment/play after its track, and counts in track_counts consistent with the rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from core.errors import PlyrError


@dataclass(frozen=True)
class SeedSize:
    tracks: int = 100_000
    artists: int = 10_000
    likes: int = 1_000_000
    comments: int = 200_000
    plays: int = 1_000_000

    def __str__(self) -> str:
        return (f"{self.tracks} tracks, {self.artists} artists, {self.likes} likes, "
                f"{self.comments} comments, {self.plays} plays")


# Helpers live in pg_temp: they vanish with the session. Identifiers use a base32-safe
# alphabet (md5 hex with 0,1,8,9 mapped to w,x,y,z), so DIDs, TIDs and CIDs are well-formed.
_FUNCTIONS = """
CREATE FUNCTION pg_temp.b32(t text, n int) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT substr(translate(md5(t) || md5(t || '~'), '0189', 'wxyz'), 1, n) $$;
CREATE FUNCTION pg_temp.artist_did(salt text, n int) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT 'did:plc:' || pg_temp.b32(salt || 'a' || n, 24) $$;
CREATE FUNCTION pg_temp.tid(salt text, kind text, n bigint) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT '3' || pg_temp.b32(salt || kind || n, 12) $$;
CREATE FUNCTION pg_temp.cid(salt text, kind text, n bigint) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT 'bafyrei' || pg_temp.b32(salt || 'c' || kind || n, 52) $$;
CREATE FUNCTION pg_temp.word(n bigint) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT (ARRAY['Midnight','Velvet','Neon','Echo','Silver','Paper','Golden','Hollow','Electric',
  'Quiet','Northern','Crystal','Broken','Summer','Winter','Wild','Lunar','Static','Amber','Ocean',
  'Glass','Fading','Distant','Secret','Burning','Gentle','Cosmic','Rusty','Lost','Daydream'])
  [1 + (n % 30)] $$;
CREATE FUNCTION pg_temp.noun(n bigint) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT (ARRAY['Hearts','Lights','Waves','Rivers','Machines','Gardens','Signals','Dreams',
  'Streets','Skies','Mirrors','Tides','Engines','Forests','Voices','Shadows','Harbors','Circuits',
  'Letters','Satellites','Horses','Windows','Bells','Clouds','Embers'])[1 + (n % 25)] $$;
CREATE FUNCTION pg_temp.artist_name(n int) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT 'The ' || pg_temp.word(n * 7 + 3) || ' ' || pg_temp.noun(n * 11 + 5) || ' ' || n $$;
"""


async def seed(
    conn: asyncpg.Connection,
    size: SeedSize,
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda _m: None,
) -> None:
    existing = await conn.fetchval("SELECT count(*) FROM (SELECT 1 FROM tracks LIMIT 1) s")
    if existing and not force:
        raise PlyrError("the index already holds tracks; use --force to add the demo data anyway")
    salt = secrets.token_hex(4)  # a second seeding makes new identifiers, not conflicts
    async with conn.transaction():
        await conn.execute(_FUNCTIONS)
        await conn.execute("SET LOCAL synchronous_commit = off")
        await conn.execute("SET LOCAL statement_timeout = 0")  # bulk statements run long

        progress(f"actors: {size.artists}")
        await conn.execute(
            """
            INSERT INTO actors (did, handle, display_name, avatar_url, pds_url, handle_check_wanted)
            SELECT pg_temp.artist_did($1, n), 'artist' || n || '-' || $1 || '.plyr.test',
                   pg_temp.artist_name(n), 'https://cdn.plyr.test/avatars/' || n || '.jpg',
                   'https://pds.plyr.test', 0  -- synthetic: nothing to look up
            FROM generate_series(1, $2) n
            ON CONFLICT (did) DO NOTHING""",
            salt, size.artists,
        )
        await conn.execute(
            """
            INSERT INTO profiles (uri, did, cid, rev, avatar_url, bio, record, created_at)
            SELECT 'at://' || d || '/fm.plyr.actor.profile/self', d, pg_temp.cid($1, 'p', n),
                   pg_temp.tid($1, 'p', n), 'https://cdn.plyr.test/avatars/' || n || '.jpg',
                   'Songs about ' || lower(pg_temp.noun(n)) || ' and ' || lower(pg_temp.noun(n + 3)),
                   jsonb_build_object('$type', 'fm.plyr.actor.profile', 'createdAt', '2025-01-01T00:00:00Z'),
                   now() - interval '400 days'
            FROM (SELECT n, pg_temp.artist_did($1, n) AS d FROM generate_series(1, $2) n) s
            ON CONFLICT DO NOTHING""",
            salt, size.artists,
        )

        progress(f"tracks: {size.tracks}")
        # Catalogue sizes are skewed: power(random(), 2) favours low artist numbers.
        await conn.execute(
            """
            INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, album, file_type, audio_url,
                                image_url, duration_s, labels, record, created_at, indexed_at, sort_at)
            SELECT 'at://' || did || '/fm.plyr.track/' || rkey, did, rkey, pg_temp.cid($1, 't', i),
                   rkey, title, pg_temp.artist_name(a), CASE WHEN i % 3 = 0 THEN 'Album ' || (i % 997) END,
                   'mp3', 'https://cdn.plyr.test/audio/' || i || '.mp3',
                   'https://cdn.plyr.test/covers/' || i || '.jpg', duration,
                   CASE WHEN i % 50 = 0 THEN ARRAY['explicit'] ELSE '{}'::text[] END,
                   jsonb_build_object('$type', 'fm.plyr.track', 'title', title,
                                      'artist', pg_temp.artist_name(a), 'fileType', 'mp3',
                                      'duration', duration,
                                      'createdAt', to_char(created AT TIME ZONE 'UTC',
                                                           'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
                   created, created + interval '2 seconds', created
            FROM (
                SELECT i, a, pg_temp.artist_did($1, a) AS did, pg_temp.tid($1, 't', i) AS rkey,
                       pg_temp.word(i) || ' ' || pg_temp.noun(i / 30) || CASE WHEN i % 4 = 0
                         THEN ' (' || pg_temp.word(i / 7) || ' Mix)' ELSE '' END AS title,
                       60 + (i * 7919) % 420 AS duration, created
                FROM (SELECT i, 1 + floor(power(random(), 2) * $2)::int AS a,
                             now() - random() * interval '365 days' AS created
                      FROM generate_series(1, $3) i) r
            ) s
            ON CONFLICT (uri) DO NOTHING""",
            salt, size.artists, size.tracks,
        )
        await conn.execute(
            """CREATE TEMP TABLE seed_tracks ON COMMIT DROP AS
               SELECT row_number() OVER (ORDER BY uri)::int AS n, uri, cid, did, created_at, duration_s
               FROM tracks"""
        )
        await conn.execute("ALTER TABLE seed_tracks ADD PRIMARY KEY (n)")
        track_total = await conn.fetchval("SELECT count(*) FROM seed_tracks")

        # Engagement: power(random(), 3) concentrates it on a few popular tracks; each event
        # happens after its track was published.
        progress(f"likes: {size.likes}")
        await conn.execute(
            """
            INSERT INTO likes (uri, did, rkey, cid, rev, subject_uri, subject_cid, created_at,
                               indexed_at, sort_at)
            SELECT 'at://' || s.did || '/fm.plyr.like/' || s.rkey, s.did, s.rkey,
                   pg_temp.cid($1, 'l', s.i), s.rkey, t.uri, t.cid, w.at, w.at, w.at
            FROM (SELECT i, pg_temp.artist_did($1, 1 + floor(random() * $2)::int) AS did,
                         pg_temp.tid($1, 'l', i) AS rkey,
                         1 + floor(power(random(), 3) * $4)::int AS tn, random() AS f
                  FROM generate_series(1, $3) i) s
            JOIN seed_tracks t ON t.n = s.tn
            CROSS JOIN LATERAL (SELECT t.created_at + s.f * (now() - t.created_at) AS at) w
            ON CONFLICT (uri) DO NOTHING""",
            salt, size.artists, size.likes, track_total,
        )

        progress(f"comments: {size.comments}")
        await conn.execute(
            """
            INSERT INTO comments (uri, did, rkey, cid, rev, subject_uri, subject_cid, text,
                                  timestamp_ms, record, created_at, indexed_at, sort_at)
            SELECT 'at://' || s.did || '/fm.plyr.comment/' || s.rkey, s.did, s.rkey,
                   pg_temp.cid($1, 'c', s.i), s.rkey, t.uri, t.cid, s.body,
                   floor(s.f * coalesce(t.duration_s, 180) * 1000)::bigint,
                   jsonb_build_object('$type', 'fm.plyr.comment', 'text', s.body),
                   w.at, w.at, w.at
            FROM (SELECT i, pg_temp.artist_did($1, 1 + floor(random() * $2)::int) AS did,
                         pg_temp.tid($1, 'c', i) AS rkey,
                         1 + floor(power(random(), 3) * $4)::int AS tn, random() AS f,
                         (ARRAY['love this part', 'the drop here!', 'chills', 'what a bassline',
                                'this melody', 'perfect transition', 'on repeat',
                                'the vocals here'])[1 + i % 8] AS body
                  FROM generate_series(1, $3) i) s
            JOIN seed_tracks t ON t.n = s.tn
            CROSS JOIN LATERAL (SELECT t.created_at + s.f * (now() - t.created_at) AS at) w
            ON CONFLICT (uri) DO NOTHING""",
            salt, size.artists, size.comments, track_total,
        )

        progress(f"plays: {size.plays}")
        await conn.execute(
            """
            INSERT INTO plays (track_uri, artist_did, listener_did, duration_ms, played_at)
            SELECT t.uri, t.did, pg_temp.artist_did($1, 1 + floor(random() * $2)::int),
                   coalesce(t.duration_s, 180) * 1000,
                   greatest(t.created_at, now() - random() * interval '90 days')
            FROM (SELECT 1 + floor(power(random(), 3) * $4)::int AS tn
                  FROM generate_series(1, $3) i) s
            JOIN seed_tracks t ON t.n = s.tn""",
            salt, size.artists, size.plays, track_total,
        )

        progress("lists and counts")
        await conn.execute(
            """
            INSERT INTO lists (uri, did, rkey, cid, rev, name, list_type, item_count, record,
                               created_at, sort_at)
            SELECT 'at://' || d || '/fm.plyr.list/' || rk, d, rk, pg_temp.cid($1, 'L', n), rk,
                   pg_temp.word(n) || ' ' || pg_temp.noun(n), CASE WHEN n % 2 = 0 THEN 'album' ELSE 'playlist' END,
                   8, jsonb_build_object('$type', 'fm.plyr.list', 'items', '[]'::jsonb),
                   now() - (n % 300) * interval '1 day', now() - (n % 300) * interval '1 day'
            FROM (SELECT n, pg_temp.artist_did($1, n) AS d, pg_temp.tid($1, 'L', n) AS rk
                  FROM generate_series(1, greatest($2 / 2, 1)) n) s
            ON CONFLICT (uri) DO NOTHING""",
            salt, size.artists,
        )
        await conn.execute(
            """
            INSERT INTO list_items (list_uri, position, subject_uri, subject_cid)
            SELECT 'at://' || pg_temp.artist_did($1, g.n) || '/fm.plyr.list/' || pg_temp.tid($1, 'L', g.n),
                   p.p, t.uri, t.cid
            FROM generate_series(1, greatest($2 / 2, 1)) g(n)
            CROSS JOIN generate_series(0, 7) p(p)
            JOIN seed_tracks t ON t.n = 1 + ((g.n * 8 + p.p) * 7919) % $3
            ON CONFLICT DO NOTHING""",
            salt, size.artists, track_total,
        )
        # Counts consistent with the rows, as the writers keep them.
        await conn.execute(
            """
            INSERT INTO track_counts (subject_uri, like_count, comment_count, play_count)
            SELECT t.uri, coalesce(l.n, 0), coalesce(c.n, 0), coalesce(p.n, 0)
            FROM seed_tracks t
            LEFT JOIN (SELECT subject_uri, count(*) n FROM likes GROUP BY 1) l ON l.subject_uri = t.uri
            LEFT JOIN (SELECT subject_uri, count(*) n FROM comments GROUP BY 1) c ON c.subject_uri = t.uri
            LEFT JOIN (SELECT track_uri, count(*) n FROM plays GROUP BY 1) p ON p.track_uri = t.uri
            ON CONFLICT (subject_uri) DO UPDATE SET like_count = excluded.like_count,
                comment_count = excluded.comment_count, play_count = excluded.play_count"""
        )
    progress("analyze")
    await conn.execute("ANALYZE")
