-- Copyright scanning, follow-ups of issue 16: who uploaded an audio object (the same bytes by a
-- second artist is a copy of the first's), decisions that carry over to later scans, the
-- allow-list's foreign keys, and a second (external) recognition engine's rows.

-- Every artist who brought us an audio object, first come first: its uploaders (an upload of
-- bytes we already hold adds a row; media_objects.uploaded_by keeps only the first) and the
-- artists whose PDS blob we copied as it. The first is the audio's artist; later artists'
-- tracks of it are copies. Owner: media/copyright/ (store.request_scan).
CREATE TABLE copyright_uploaders (
    sha256      text NOT NULL,           -- media_objects.sha256
    did         text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sha256, did)
);
CREATE INDEX copyright_uploaders_first ON copyright_uploaders (sha256, first_seen, did);

INSERT INTO copyright_uploaders (sha256, did, first_seen)
SELECT sha256, uploaded_by, created_at FROM media_objects WHERE kind = 'audio' AND uploaded_by IS NOT NULL
ON CONFLICT DO NOTHING;
INSERT INTO copyright_uploaders (sha256, did, first_seen)
SELECT x.sha256, split_part(substr(m.track_uri, 6), '/', 1), min(m.mirrored_at)
FROM media_mirrors m
JOIN (SELECT url, sha256 FROM media_objects WHERE kind = 'audio'
      UNION ALL SELECT url, source_sha256 FROM media_renditions WHERE name = 'stream') x ON x.url = m.url
WHERE m.track_uri LIKE 'at://%'
GROUP BY 1, 2
ON CONFLICT DO NOTHING;

-- The tracks that play an object: as in 0042, with the tracks of every uploader (not only the
-- first) that name the object's URL.
CREATE OR REPLACE FUNCTION copyright_audio_tracks(p_sha256 text) RETURNS TABLE (track_uri text, did text)
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
        SELECT t.uri FROM copyright_uploaders u JOIN tracks t ON t.did = u.did
        WHERE u.sha256 = p_sha256 AND t.audio_url IN (SELECT url FROM urls)
        UNION
        SELECT s.track_uri FROM copyright_scans s WHERE s.sha256 = p_sha256 AND s.track_uri IS NOT NULL
    )
    SELECT t.uri, t.did FROM candidates c JOIN tracks t ON t.uri = c.uri
    WHERE copyright_track_audio(t.uri) = p_sha256
    ORDER BY t.uri
$$;

-- A scan row of an external recognition service (media/copyright/recognition.py) rather than
-- of our own fingerprints: its `engine` names the service. Its `clear` never clears a track and
-- its `error` never turns our own engine's result into an error (copyright_track_status).
ALTER TABLE copyright_scans ADD COLUMN external boolean NOT NULL DEFAULT false;

-- The allow-list names catalog entries: a reference allow-listed for an artist cannot go away
-- under it (rows left by a reference removed before this migration are dropped first).
DELETE FROM copyright_allowlist a WHERE NOT EXISTS (SELECT 1 FROM copyright_references r WHERE r.id = a.reference_id);
ALTER TABLE copyright_allowlist
    ADD CONSTRAINT copyright_allowlist_reference_fkey FOREIGN KEY (reference_id) REFERENCES copyright_references (id);
CREATE INDEX copyright_allowlist_reference ON copyright_allowlist (reference_id);

-- Per track, where its copyright scanning stands (0042's view, same columns, now per track):
--   the newest scan of our own engine decides (`clear`, `flagged`, `error`); an external
--   engine's newer `flagged` row (a recognition) makes a `clear` flagged, its `clear` and
--   `error` change nothing;
--   a match with `copier` (the same audio brought by a later artist: media/copyright/scan.py)
--   concerns only that artist's tracks: for the first artist's track it is no match;
--   `reviewed`: the scan has a review, or every match concerning the track carries an earlier
--   decision (`decided`: a rescan of something a moderator already resolved).
CREATE OR REPLACE VIEW copyright_track_status AS
SELECT t.uri AS track_uri,
       t.did,
       a.sha256,
       CASE WHEN s.id IS NULL THEN (CASE WHEN j.live THEN 'scanning' ELSE 'unscanned' END)
            WHEN s.status = 'error' THEN 'error'
            WHEN jsonb_array_length(m.matches) > 0 THEN 'flagged'
            ELSE 'clear' END AS status,
       s.id AS scan_id,
       s.attempt,
       CASE WHEN s.id IS NOT NULL THEN m.matches END AS matches,
       s.error,
       s.finished_at,
       s.next_attempt_at,
       coalesce(j.live, false) AS job_pending,
       rv.resolution,
       (rv.resolution IS NOT NULL
        OR (jsonb_array_length(m.matches) > 0
            AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(m.matches) d WHERE NOT d ? 'decided'))) AS reviewed
FROM tracks t
CROSS JOIN LATERAL (SELECT copyright_track_audio(t.uri) AS sha256) a
LEFT JOIN LATERAL (
    SELECT * FROM copyright_scans cs WHERE cs.sha256 = a.sha256 AND NOT cs.external ORDER BY cs.id DESC LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT x.matches FROM copyright_scans x
    WHERE x.sha256 = a.sha256 AND x.external AND x.status = 'flagged' AND x.id > s.id
    ORDER BY x.id DESC LIMIT 1
) ext ON s.status IS DISTINCT FROM 'error'
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_agg(e.m ORDER BY e.n), '[]'::jsonb) AS matches
    FROM (SELECT el, n FROM jsonb_array_elements(coalesce(s.matches, '[]'::jsonb) || coalesce(ext.matches, '[]'::jsonb))
                 WITH ORDINALITY AS x(el, n)) e(m, n)
    WHERE NOT (e.m ? 'copier') OR e.m ->> 'copier' = t.did
) m
LEFT JOIN LATERAL (
    SELECT true AS live FROM media_jobs mj
    WHERE mj.kind = 'copyright_scan' AND mj.dedupe_key = a.sha256 AND mj.status IN ('queued', 'running')
    LIMIT 1
) j ON true
LEFT JOIN LATERAL (
    SELECT r.resolution FROM copyright_reviews r WHERE r.scan_id = s.id ORDER BY r.id DESC LIMIT 1
) rv ON true;
