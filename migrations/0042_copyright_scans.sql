-- Copyright scanning (issue 16): what a scan of the audio we hold found, and what moderators
-- decided about it. Fingerprints, their index and the reference catalog are 0041's.
--
-- Owners: `copyright_scans` is media's (media/copyright/: the scan job and `plyr moderation
-- scan`); `copyright_reviews` and `copyright_allowlist` are the AppView moderation's
-- (appview/moderation/copyright.py, the same owner as moderation_actions). Each side only reads
-- the other's tables.

-- One row per attempt at scanning one audio object (media_objects.sha256). An upload is scanned
-- before any track names it, so `track_uri` is the track the scan was asked for or found
-- playing the audio (NULL: none yet); which tracks play it is decided when read
-- (copyright_audio_tracks, copyright_track_status). A failed attempt is an `error` row with its
-- message: it is never `clear`, and the next attempt (`next_attempt_at`) writes a row of its own.
CREATE TABLE copyright_scans (
    id              bigserial PRIMARY KEY,
    sha256          text NOT NULL,          -- the audio scanned (media_objects.sha256)
    storage_key     text,                   -- the object read (media_objects.storage_key)
    blob_cid        text,                   -- the PDS blob it is a copy of, when mirrored
    track_uri       text,                   -- see above
    job_id          bigint,                 -- the media job (NULL: `plyr moderation scan`)
    attempt         integer NOT NULL CHECK (attempt >= 1),   -- the try of one scan request: 1, then retries
    status          text NOT NULL CHECK (status IN ('clear', 'flagged', 'error')),
    -- [{reference_id, track_uri, fingerprint_id, offset_s, reference_offset_s, length_s, similarity}]
    -- offset_s: where the match starts in this audio; reference_offset_s: in the matched audio.
    matches         jsonb NOT NULL DEFAULT '[]',
    engine          text,                   -- the fingerprinter (NULL: it did not get that far)
    fingerprint_id  bigint,                 -- this audio's fingerprint (0041's audio_fingerprints)
    duration_s      real,                   -- of the audio, as fingerprinted
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),   -- the attempt started
    finished_at     timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz,            -- an error to be tried again then; NULL: not (any more)
    CHECK ((status = 'error') = (error IS NOT NULL)),
    CHECK (status <> 'flagged' OR jsonb_array_length(matches) > 0),
    CHECK (next_attempt_at IS NULL OR status = 'error')
);
CREATE INDEX copyright_scans_audio ON copyright_scans (sha256, id);
CREATE INDEX copyright_scans_track ON copyright_scans (track_uri, id) WHERE track_uri IS NOT NULL;
CREATE INDEX copyright_scans_by_status ON copyright_scans (status, id);
CREATE INDEX copyright_scans_fingerprint ON copyright_scans (fingerprint_id) WHERE fingerprint_id IS NOT NULL;

-- A moderator's decision on a flagged scan; the newest row of a scan is the decision in force.
-- A violation's takedown is a moderation_actions row (and our `!takedown` label), written in the
-- review's transaction.
CREATE TABLE copyright_reviews (
    id          bigserial PRIMARY KEY,
    scan_id     bigint NOT NULL REFERENCES copyright_scans (id),
    resolution  text NOT NULL CHECK (resolution IN ('violation', 'false_positive', 'original_artist')),
    track_uris  text[] NOT NULL DEFAULT '{}',   -- the tracks decided on (a violation's: taken down)
    reviewer    text NOT NULL,          -- a moderator DID, or `cli:<user>`
    note        text NOT NULL,
    action_ids  bigint[] NOT NULL DEFAULT '{}', -- the takedowns (moderation_actions) of a violation
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX copyright_reviews_scan ON copyright_reviews (scan_id, id);

-- Original artists: a match of `reference_id` (0041's copyright_references.id) in audio of
-- `artist_did` is their own work, not a violation; scans leave such matches out.
CREATE TABLE copyright_allowlist (
    artist_did   text NOT NULL,
    reference_id bigint NOT NULL,
    review_id    bigint REFERENCES copyright_reviews (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (artist_did, reference_id)
);

-- Finding the tracks that play an object: through our PDS blob copies, and uploads the
-- uploader's tracks play (tracks_by_artist).
CREATE INDEX media_mirrors_url ON media_mirrors (url);

-- The audio object a track plays, if we hold it: the copy of its blob (media_mirrors), else the
-- object or stream rendition its audioUrl names, else an object stored from its blob.
CREATE FUNCTION copyright_track_audio(p_uri text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT a.sha256 FROM (
        SELECT coalesce(o.sha256, r.source_sha256) AS sha256, u.pref
        FROM tracks t
        CROSS JOIN LATERAL (
            SELECT m.url, 0 AS pref FROM media_mirrors m
            WHERE m.track_uri = t.uri AND m.blob_cid = t.audio_blob_cid
            UNION ALL
            SELECT t.audio_url, 1 WHERE t.audio_url IS NOT NULL
        ) u
        LEFT JOIN media_objects o ON o.url = u.url AND o.kind = 'audio'
        LEFT JOIN media_renditions r ON r.url = u.url AND r.name = 'stream'
        WHERE t.uri = p_uri AND (o.sha256 IS NOT NULL OR r.source_sha256 IS NOT NULL)
        UNION ALL
        SELECT o.sha256, 2 FROM tracks t JOIN media_objects o ON o.blob_cid = t.audio_blob_cid
        WHERE t.uri = p_uri AND t.audio_blob_cid IS NOT NULL AND o.kind = 'audio'
    ) a
    ORDER BY a.pref LIMIT 1
$$;

-- The tracks that play the audio object `p_sha256` now: candidates from our blob copies, the
-- uploader's tracks, and the tracks scans were made for, each checked the forward way.
CREATE FUNCTION copyright_audio_tracks(p_sha256 text) RETURNS TABLE (track_uri text, did text)
LANGUAGE sql STABLE AS $$
    WITH urls AS (
        SELECT url FROM media_objects WHERE sha256 = p_sha256 AND kind = 'audio'
        UNION SELECT url FROM media_renditions WHERE source_sha256 = p_sha256 AND name = 'stream'
    ), candidates AS (
        SELECT m.track_uri AS uri FROM media_mirrors m WHERE m.url IN (SELECT url FROM urls)
        UNION
        SELECT t.uri FROM media_objects o JOIN tracks t ON t.did = o.uploaded_by
        WHERE o.sha256 = p_sha256 AND t.audio_url IN (SELECT url FROM urls)
        UNION
        SELECT s.track_uri FROM copyright_scans s WHERE s.sha256 = p_sha256 AND s.track_uri IS NOT NULL
    )
    SELECT t.uri, t.did FROM candidates c JOIN tracks t ON t.uri = c.uri
    WHERE copyright_track_audio(t.uri) = p_sha256
    ORDER BY t.uri
$$;

-- Per track, where its copyright scanning stands. Nothing unscanned or failed reads as clear:
--   unscanned  we hold no audio of it, or no scan of that audio was ever made or asked for
--   scanning   a scan job is queued or running and no attempt has finished yet
--   clear | flagged | error   the newest attempt's outcome (`job_pending`: a scan job is
--              queued or running, e.g. an error's retry, due at `next_attempt_at`)
-- `reviewed`: the newest scan has a review (`resolution`: the newest review's).
CREATE VIEW copyright_track_status AS
SELECT t.uri AS track_uri,
       t.did,
       a.sha256,
       CASE WHEN s.id IS NOT NULL THEN s.status
            WHEN j.live THEN 'scanning'
            ELSE 'unscanned' END AS status,
       s.id AS scan_id,
       s.attempt,
       s.matches,
       s.error,
       s.finished_at,
       s.next_attempt_at,
       coalesce(j.live, false) AS job_pending,
       rv.resolution,
       rv.resolution IS NOT NULL AS reviewed
FROM tracks t
CROSS JOIN LATERAL (SELECT copyright_track_audio(t.uri) AS sha256) a
LEFT JOIN LATERAL (
    SELECT * FROM copyright_scans cs WHERE cs.sha256 = a.sha256 ORDER BY cs.id DESC LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT true AS live FROM media_jobs mj
    WHERE mj.kind = 'copyright_scan' AND mj.dedupe_key = a.sha256 AND mj.status IN ('queued', 'running')
    LIMIT 1
) j ON true
LEFT JOIN LATERAL (
    SELECT r.resolution FROM copyright_reviews r WHERE r.scan_id = s.id ORDER BY r.id DESC LIMIT 1
) rv ON true;
