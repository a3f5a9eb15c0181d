"""The set-based statements of a batch: what is stored now, and the upserts of each collection.

Every statement takes whole columns (unnest of arrays), so a batch costs a few round trips
whatever its size.
"""

from __future__ import annotations

from indexer.network_plays import PLAY, PLAY_ALPHA
from indexer.records import COMMENT, LIKE, LIST, PROFILE, TRACK

# What is stored now, in one round trip: actors' status and visibility (k = -1), tombstones
# (k = 0, with the cid of a refused version that hid the record), and per collection the row's
# rev and what its counts depend on (likes/comments: subject; tracks: duration, and the title key
# network plays are matched on; network plays: the track they matched).
STATE_SQL = """
SELECT -1 AS k, did AS uri, status AS rev, visible::text AS subject, NULL::numeric AS seconds,
       NULL::timestamptz AS at
  FROM actors WHERE did = ANY($7::text[])
UNION ALL SELECT 0, uri, rev, hidden_cid, NULL, NULL FROM tombstones WHERE uri = ANY($1::text[])
UNION ALL SELECT 1, uri, rev, subject_uri, NULL, NULL FROM likes WHERE uri = ANY($2::text[])
UNION ALL SELECT 2, uri, rev, subject_uri, NULL, NULL FROM comments WHERE uri = ANY($3::text[])
UNION ALL SELECT 3, uri, rev, nullif(match_key, '') || E'\n' || nullif(artist_key, ''), duration_s, NULL
  FROM tracks WHERE uri = ANY($4::text[])
UNION ALL SELECT 4, uri, rev, NULL, NULL, NULL FROM lists WHERE uri = ANY($5::text[])
UNION ALL SELECT 5, uri, rev, NULL, NULL, NULL FROM profiles WHERE uri = ANY($6::text[])
UNION ALL SELECT 6, uri, rev, track_uri, (match_method = 'url')::int, played_at FROM network_plays
  WHERE uri = ANY($8::text[])
"""
STATE_KIND = {LIKE: 1, COMMENT: 2, TRACK: 3, LIST: 4, PROFILE: 5, PLAY_ALPHA: 6, PLAY: 6}

TABLE = {TRACK: "tracks", LIKE: "likes", COMMENT: "comments", LIST: "lists", PROFILE: "profiles"}

UPSERT_TRACKS = """
INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, album, description, file_type,
                    audio_url, audio_blob_cid, image_url, duration_s, labels, record,
                    created_at, record_exact, match_key, artist_key, sort_at)
SELECT u.uri, u.did, u.rkey, u.cid, u.rev, u.title, u.artist, u.album, u.description, u.file_type,
       u.audio_url, u.audio_blob_cid, u.image_url, u.duration_s,
       ARRAY(SELECT jsonb_array_elements_text(u.labels::jsonb)), u.record,
       u.created_at, u.record_exact, u.match_key, u.artist_key, least(u.created_at, now())
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::bigint[], $15::text[], $16::jsonb[], $17::timestamptz[], $18::bytea[],
            $19::text[], $20::text[])
  AS u(uri, did, rkey, cid, rev, title, artist, album, description, file_type, audio_url,
       audio_blob_cid, image_url, duration_s, labels, record, created_at, record_exact,
       match_key, artist_key)
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, title = excluded.title, artist = excluded.artist,
  album = excluded.album, description = excluded.description, file_type = excluded.file_type,
  audio_url = excluded.audio_url, audio_blob_cid = excluded.audio_blob_cid,
  image_url = excluded.image_url, duration_s = excluded.duration_s, labels = excluded.labels,
  record = excluded.record, created_at = excluded.created_at, record_exact = excluded.record_exact,
  match_key = excluded.match_key, artist_key = excluded.artist_key,
  sort_at = least(excluded.created_at, tracks.indexed_at)
WHERE tracks.rev < excluded.rev
"""

UPSERT_LIKES = """
INSERT INTO likes (uri, did, rkey, cid, rev, subject_uri, subject_cid, record, created_at,
                   record_exact, sort_at)
SELECT u.*, least(u.created_at, now())
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::jsonb[], $9::timestamptz[], $10::bytea[])
  AS u(uri, did, rkey, cid, rev, subject_uri, subject_cid, record, created_at, record_exact)
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, subject_uri = excluded.subject_uri,
  subject_cid = excluded.subject_cid, record = excluded.record, created_at = excluded.created_at,
  record_exact = excluded.record_exact, sort_at = least(excluded.created_at, likes.indexed_at)
WHERE likes.rev < excluded.rev
"""

UPSERT_COMMENTS = """
INSERT INTO comments (uri, did, rkey, cid, rev, subject_uri, subject_cid, text, timestamp_ms,
                      record, created_at, updated_at, record_exact, sort_at)
SELECT u.*, least(u.created_at, now())
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::bigint[], $10::jsonb[], $11::timestamptz[], $12::timestamptz[],
            $13::bytea[])
  AS u(uri, did, rkey, cid, rev, subject_uri, subject_cid, text, timestamp_ms, record,
       created_at, updated_at, record_exact)
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, subject_uri = excluded.subject_uri,
  subject_cid = excluded.subject_cid, text = excluded.text, timestamp_ms = excluded.timestamp_ms,
  record = excluded.record, created_at = excluded.created_at, updated_at = excluded.updated_at,
  record_exact = excluded.record_exact, sort_at = least(excluded.created_at, comments.indexed_at)
WHERE comments.rev < excluded.rev
"""

UPSERT_LISTS = """
INSERT INTO lists (uri, did, rkey, cid, rev, name, list_type, item_count, record, created_at,
                   updated_at, record_exact, sort_at)
SELECT u.*, least(u.created_at, now())
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::int[], $9::jsonb[], $10::timestamptz[], $11::timestamptz[], $12::bytea[])
  AS u(uri, did, rkey, cid, rev, name, list_type, item_count, record, created_at, updated_at,
       record_exact)
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, name = excluded.name, list_type = excluded.list_type,
  item_count = excluded.item_count, record = excluded.record, created_at = excluded.created_at,
  updated_at = excluded.updated_at, record_exact = excluded.record_exact,
  sort_at = least(excluded.created_at, lists.indexed_at)
WHERE lists.rev < excluded.rev
"""

INSERT_LIST_ITEMS = """
INSERT INTO list_items (list_uri, position, subject_uri, subject_cid)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[])
"""

UPSERT_PROFILES = """
INSERT INTO profiles (uri, did, cid, rev, avatar_url, bio, record, created_at, updated_at,
                      record_exact)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::jsonb[], $8::timestamptz[], $9::timestamptz[], $10::bytea[])
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, avatar_url = excluded.avatar_url, bio = excluded.bio,
  record = excluded.record, created_at = excluded.created_at, updated_at = excluded.updated_at,
  record_exact = excluded.record_exact
WHERE profiles.rev < excluded.rev
"""

# Network plays (indexer/network_plays.py): the matched track is not written here; the match
# statement that follows (writer/network_match.py) decides it and keeps the counters.
UPSERT_NETWORK_PLAYS = """
INSERT INTO network_plays (uri, did, rkey, collection, cid, rev, track_name, name_key,
                           artist_keys, pair_keys, duration_s, played_at, url_track_uri, url_host,
                           url_short_id, record, record_exact)
SELECT u.uri, u.did, u.rkey, u.collection, u.cid, u.rev, u.track_name, u.name_key,
       ARRAY(SELECT jsonb_array_elements_text(u.artist_keys::jsonb)),
       ARRAY(SELECT u.name_key || E'\n' || a FROM jsonb_array_elements_text(u.artist_keys::jsonb) a
             WHERE u.name_key IS NOT NULL),
       u.duration_s, u.played_at, u.url_track_uri, u.url_host, u.url_short_id, u.record,
       u.record_exact
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::bigint[], $11::timestamptz[], $12::text[], $13::text[],
            $14::bigint[], $15::jsonb[], $16::bytea[])
  AS u(uri, did, rkey, collection, cid, rev, track_name, name_key, artist_keys, duration_s,
       played_at, url_track_uri, url_host, url_short_id, record, record_exact)
ON CONFLICT (uri) DO UPDATE SET
  cid = excluded.cid, rev = excluded.rev, track_name = excluded.track_name,
  name_key = excluded.name_key, artist_keys = excluded.artist_keys, pair_keys = excluded.pair_keys,
  duration_s = excluded.duration_s, played_at = excluded.played_at,
  url_track_uri = excluded.url_track_uri, url_host = excluded.url_host,
  url_short_id = excluded.url_short_id, record = excluded.record,
  record_exact = excluded.record_exact
WHERE network_plays.rev < excluded.rev
"""

UPSERT_TOMBSTONES = """
INSERT INTO tombstones (uri, did, collection, rev, hidden_cid)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev, hidden_cid = excluded.hidden_cid,
  deleted_at = now()
WHERE tombstones.rev < excluded.rev
"""

UPSERT_ACTORS = """
INSERT INTO actors AS a (did, repo_rev, needs_resync, resync_reason)
SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[])
ON CONFLICT (did) DO UPDATE SET
  repo_rev = CASE WHEN a.repo_rev IS NULL OR excluded.repo_rev > a.repo_rev
                  THEN excluded.repo_rev ELSE a.repo_rev END,
  needs_resync = a.needs_resync OR excluded.needs_resync,
  resync_reason = CASE WHEN excluded.needs_resync THEN excluded.resync_reason
                       ELSE a.resync_reason END,
  updated_at = now()
RETURNING did, (xmax = 0) AS inserted
"""
