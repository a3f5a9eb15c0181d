-- The index of fm.plyr.* records and the bookkeeping the indexer writes with them.
-- Every record table is keyed by AT-URI and carries the record's cid, the repo commit `rev` that
-- wrote it (TIDs: byte order is time order, hence COLLATE "C"), the record's own time, and when we
-- indexed it. `sort_at` = least(createdAt, indexed_at): a record cannot sort itself into the future.
-- Likes and comments point at their subject by URI, not by foreign key: a like may arrive before
-- its track, or be for a track we never see.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE actors (
    did             text PRIMARY KEY,
    handle          text,                 -- verified both ways, else NULL
    display_name    text,
    avatar_url      text,
    pds_url         text,
    -- com.atproto.sync account status: active, deactivated, takendown, suspended, deleted, ...
    status          text NOT NULL DEFAULT 'active',
    -- false hides the actor's records from the AppView (kept, not deleted)
    visible         boolean NOT NULL DEFAULT true,
    repo_rev        text COLLATE "C",     -- the newest commit rev seen for this repo
    needs_resync    boolean NOT NULL DEFAULT false,
    resync_reason   text,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX actors_handle ON actors (lower(handle));
CREATE INDEX actors_needs_resync ON actors (did) WHERE needs_resync;

CREATE TABLE tracks (
    uri             text PRIMARY KEY,
    did             text NOT NULL,
    rkey            text NOT NULL,
    cid             text NOT NULL,
    rev             text COLLATE "C" NOT NULL,
    title           text NOT NULL,
    artist          text NOT NULL,
    album           text,
    description     text,
    file_type       text NOT NULL,
    audio_url       text,                 -- where the audio plays from (our mirror once made)
    audio_blob_cid  text,                 -- the PDS blob, when the record carries one
    image_url       text,
    duration_s      integer,
    labels          text[] NOT NULL DEFAULT '{}',
    record          jsonb NOT NULL,       -- the record as published (JSON form)
    created_at      timestamptz NOT NULL,
    indexed_at      timestamptz NOT NULL DEFAULT now(),
    sort_at         timestamptz NOT NULL
);
CREATE INDEX tracks_latest ON tracks (sort_at DESC, uri DESC);
CREATE INDEX tracks_by_artist ON tracks (did, sort_at DESC, uri DESC);
CREATE INDEX tracks_title_trgm ON tracks USING gin (title gin_trgm_ops);
CREATE INDEX tracks_artist_trgm ON tracks USING gin (artist gin_trgm_ops);

CREATE TABLE likes (
    uri             text PRIMARY KEY,
    did             text NOT NULL,
    rkey            text NOT NULL,
    cid             text NOT NULL,
    rev             text COLLATE "C" NOT NULL,
    subject_uri     text NOT NULL,
    subject_cid     text NOT NULL,
    created_at      timestamptz NOT NULL,
    indexed_at      timestamptz NOT NULL DEFAULT now(),
    sort_at         timestamptz NOT NULL
);
CREATE INDEX likes_by_subject ON likes (subject_uri, sort_at DESC, uri DESC);
CREATE INDEX likes_by_actor ON likes (did, sort_at DESC, uri DESC);

CREATE TABLE comments (
    uri             text PRIMARY KEY,
    did             text NOT NULL,
    rkey            text NOT NULL,
    cid             text NOT NULL,
    rev             text COLLATE "C" NOT NULL,
    subject_uri     text NOT NULL,
    subject_cid     text NOT NULL,
    text            text NOT NULL,
    timestamp_ms    bigint NOT NULL,      -- position in the audio
    record          jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz,
    indexed_at      timestamptz NOT NULL DEFAULT now(),
    sort_at         timestamptz NOT NULL
);
CREATE INDEX comments_by_subject ON comments (subject_uri, timestamp_ms, uri);
CREATE INDEX comments_by_actor ON comments (did, sort_at DESC);

CREATE TABLE lists (
    uri             text PRIMARY KEY,
    did             text NOT NULL,
    rkey            text NOT NULL,
    cid             text NOT NULL,
    rev             text COLLATE "C" NOT NULL,
    name            text,
    list_type       text,                 -- album, playlist, liked, or another known value
    item_count      integer NOT NULL DEFAULT 0,
    record          jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz,
    indexed_at      timestamptz NOT NULL DEFAULT now(),
    sort_at         timestamptz NOT NULL
);
CREATE INDEX lists_by_actor ON lists (did, sort_at DESC, uri DESC);

CREATE TABLE list_items (
    list_uri        text NOT NULL REFERENCES lists (uri) ON DELETE CASCADE,
    position        integer NOT NULL,
    subject_uri     text NOT NULL,
    subject_cid     text NOT NULL,
    PRIMARY KEY (list_uri, position)
);
CREATE INDEX list_items_by_subject ON list_items (subject_uri);

CREATE TABLE profiles (
    uri             text PRIMARY KEY,     -- at://DID/fm.plyr.actor.profile/self
    did             text NOT NULL UNIQUE,
    cid             text NOT NULL,
    rev             text COLLATE "C" NOT NULL,
    avatar_url      text,
    bio             text,
    record          jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz,
    indexed_at      timestamptz NOT NULL DEFAULT now()
);

-- Aggregates per subject URI, kept in the same transaction as the rows they count.
CREATE TABLE track_counts (
    subject_uri     text PRIMARY KEY,
    like_count      bigint NOT NULL DEFAULT 0,
    comment_count   bigint NOT NULL DEFAULT 0,
    play_count      bigint NOT NULL DEFAULT 0
);
CREATE INDEX track_counts_by_likes ON track_counts (like_count DESC);

-- A deleted record's URI and the rev that deleted it: an older create replayed later stays dead.
CREATE TABLE tombstones (
    uri             text PRIMARY KEY,
    did             text NOT NULL,
    collection      text NOT NULL,
    rev             text COLLATE "C" NOT NULL,
    deleted_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tombstones_by_did ON tombstones (did);

-- Where each stream stopped, written in the same transaction as the rows it covers.
CREATE TABLE cursors (
    source          text PRIMARY KEY,     -- e.g. the relay URL
    seq             bigint NOT NULL,
    event_time      timestamptz,          -- the `time` of the event at seq
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Records and frames we could not index, with why; `plyr deadletters` lists and replays them.
CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    source          text NOT NULL,
    seq             bigint,
    uri             text,
    did             text,
    collection      text,
    rev             text,
    cid             text,
    reason          text NOT NULL,
    record          jsonb,
    raw             bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz,
    replay_result   text
);
CREATE INDEX dead_letters_pending ON dead_letters (id) WHERE replayed_at IS NULL;
