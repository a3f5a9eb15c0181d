-- Copyright fingerprints (owner: media/fingerprint/): the operator's reference catalog, one
-- Chromaprint fingerprint per track or reference, and the inverted index over sub-fingerprint
-- values that matching looks terms up in (so that it never scans the catalog).

CREATE TABLE copyright_references (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    artist      text NOT NULL CHECK (length(artist) BETWEEN 1 AND 500),
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    isrc        text CHECK (isrc ~ '^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$'),
    sha256      text NOT NULL UNIQUE,  -- of the file it was made from: adding it again reuses it
    duration_s  double precision NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One fingerprint per track (its current audio), per reference, or per stored audio object not
-- yet played by any track (an upload scanned before its record exists: `audio_sha256`); storing
-- again replaces it.
-- `fingerprint`: the sub-fingerprints as little-endian uint32 (4 bytes each, ~8 per second).
CREATE TABLE audio_fingerprints (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    track_uri     text,
    reference_id  bigint REFERENCES copyright_references (id),  -- removed through remove_reference
    audio_sha256  text,
    engine        text NOT NULL,
    duration_s    double precision NOT NULL,
    value_count   integer NOT NULL,
    fingerprint   bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(track_uri, reference_id, audio_sha256) = 1)
);
ALTER TABLE audio_fingerprints ALTER COLUMN fingerprint SET STORAGE EXTERNAL;  -- does not compress
CREATE UNIQUE INDEX audio_fingerprints_track ON audio_fingerprints (track_uri) WHERE track_uri IS NOT NULL;
CREATE UNIQUE INDEX audio_fingerprints_reference ON audio_fingerprints (reference_id) WHERE reference_id IS NOT NULL;
CREATE UNIQUE INDEX audio_fingerprints_audio ON audio_fingerprints (audio_sha256) WHERE audio_sha256 IS NOT NULL;

-- The inverted index: a sample of each fingerprint's values (media/fingerprint/align.py `terms`)
-- with their positions. `hash` is the term (the value masked, as int4). Rows of a fingerprint are written
-- with it and deleted with it (by fingerprint_id, in the same transaction); no foreign key, so
-- that bulk COPY does not check one per row.
CREATE TABLE audio_fingerprint_index (
    fingerprint_id  bigint NOT NULL,
    hash            integer NOT NULL,
    position        integer NOT NULL
);
CREATE INDEX audio_fingerprint_index_hash ON audio_fingerprint_index (hash);
CREATE INDEX audio_fingerprint_index_fingerprint ON audio_fingerprint_index (fingerprint_id);  -- deduplicated: small
