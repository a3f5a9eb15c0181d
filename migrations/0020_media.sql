-- The media service's tables: the job queue and the stored objects.
--
-- media_jobs is a work queue shared by any number of workers. A worker claims a row with
-- FOR UPDATE SKIP LOCKED and holds it by a lease (lease_until); a worker that dies lets the
-- lease run out and the job becomes claimable again. Failed attempts are retried after a
-- backoff (run_after) until max_attempts; the last error stays on the row.
CREATE TABLE media_jobs (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL,                 -- transcode, mirror, export
    owner           text,                          -- the DID the job works for
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    progress        real NOT NULL DEFAULT 0,       -- 0..1
    phase           text,                          -- what the job is doing now, for people
    error           text,                          -- why the last attempt failed
    payload         jsonb NOT NULL DEFAULT '{}',
    result          jsonb,
    dedupe_key      text,                          -- one live job per key (e.g. a track's mirror)
    worker          text,                          -- who holds the lease
    lease_until     timestamptz,
    run_after       timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
-- The claim query walks this index: queued jobs due now, oldest first.
CREATE INDEX media_jobs_due ON media_jobs (run_after, id) WHERE status = 'queued';
-- Running jobs whose lease may have expired.
CREATE INDEX media_jobs_leases ON media_jobs (lease_until) WHERE status = 'running';
CREATE INDEX media_jobs_by_owner ON media_jobs (owner, created_at DESC);
CREATE UNIQUE INDEX media_jobs_live_key ON media_jobs (kind, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');

-- Every original file we hold, named by the sha-256 of its bytes: the same upload twice is
-- stored once. `blob_cid` is set when the object came from a PDS blob.
CREATE TABLE media_objects (
    sha256          text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    kind            text NOT NULL CHECK (kind IN ('audio', 'image')),
    format          text NOT NULL,                 -- what sniffing found: wav, flac, mp3, png, ...
    mime_type       text NOT NULL,
    size            bigint NOT NULL,
    storage_key     text NOT NULL UNIQUE,
    url             text NOT NULL,                 -- decided once, when the object is stored
    uploaded_by     text,                          -- the DID of the first uploader
    blob_cid        text,
    probe           jsonb NOT NULL DEFAULT '{}',   -- duration, codec, sample rate, tags, ...
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX media_objects_blob_cid ON media_objects (blob_cid) WHERE blob_cid IS NOT NULL;

-- What we derive from an original: the MP3 stream of a lossless upload, image thumbnails.
CREATE TABLE media_renditions (
    source_sha256   text NOT NULL REFERENCES media_objects (sha256) ON DELETE CASCADE,
    name            text NOT NULL,                 -- stream, thumb, display
    storage_key     text NOT NULL UNIQUE,
    mime_type       text NOT NULL,
    size            bigint NOT NULL,
    url             text NOT NULL,                 -- decided once, when the rendition is made
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_sha256, name)
);

-- Exports find a track's object by the URL the record plays from.
CREATE INDEX media_objects_url ON media_objects (url);
CREATE INDEX media_renditions_url ON media_renditions (url);
