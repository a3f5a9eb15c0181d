-- Our copies of PDS audio blobs, owned by media (media/mirror.py): a track plays from our copy
-- while it still carries the blob the copy is of (the AppView joins on track uri and blob cid).
-- Until now the copy's URL was written into tracks.audio_url; it moves here, and tracks.audio_url
-- goes back to what the record says.
CREATE TABLE media_mirrors (
    track_uri       text NOT NULL,
    blob_cid        text NOT NULL,
    url             text NOT NULL,
    mirrored_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (track_uri, blob_cid)
);

INSERT INTO media_mirrors (track_uri, blob_cid, url)
SELECT uri, audio_blob_cid, audio_url FROM tracks
WHERE audio_blob_cid IS NOT NULL AND audio_url IS NOT NULL
  AND audio_url IS DISTINCT FROM record->>'audioUrl';

UPDATE tracks SET audio_url = record->>'audioUrl'
WHERE audio_blob_cid IS NOT NULL AND audio_url IS NOT NULL
  AND audio_url IS DISTINCT FROM record->>'audioUrl';
