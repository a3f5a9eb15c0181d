-- Network plays (issue 17): teal.fm play records (`fm.teal.alpha.feed.play`, `fm.teal.feed.play`)
-- from listeners' repos, indexed through the same verified write path as our records and owned
-- by the indexer's writer (indexer/writer/). The record is kept whole; the other columns are
-- derived views (indexer/network_plays.py) and the match to a plyr track
-- (indexer/writer/network_match.py).
CREATE TABLE network_plays (
    uri             text PRIMARY KEY,
    did             text NOT NULL,            -- the listener
    rkey            text NOT NULL,
    collection      text NOT NULL,
    cid             text NOT NULL,
    rev             text COLLATE "C" NOT NULL,
    track_name      text NOT NULL,
    name_key        text,                     -- trackName normalized (indexer/match_keys.py)
    artist_keys     text[] NOT NULL DEFAULT '{}',
    pair_keys       text[] NOT NULL DEFAULT '{}', -- name_key || E'\n' || each artist key
    duration_s      bigint,
    played_at       timestamptz,              -- playedTime (clamped like other datetimes)
    url_track_uri   text,                     -- an at://…/fm.plyr.track/… the play's URL names
    url_host        text,                     -- or a /track/<n> page: its host…
    url_short_id    bigint,                   -- …and number
    track_uri       text,                     -- the plyr track it matched, if any
    match_method    text CHECK (match_method IN ('url', 'metadata')),
    record          jsonb NOT NULL,
    record_exact    bytea,                    -- the exact JSON when jsonb cannot hold it (U+0000)
    indexed_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((track_uri IS NULL) = (match_method IS NULL))
);
CREATE INDEX network_plays_by_did ON network_plays (did);
CREATE INDEX network_plays_by_track ON network_plays (track_uri) WHERE track_uri IS NOT NULL;
-- The plays a track can match: found by (title, artist) pair, not by title alone (a title such as
-- "Intro" is shared by a great many plays).
CREATE INDEX network_plays_by_pair ON network_plays USING gin (pair_keys) WHERE url_track_uri IS NULL;
-- A legacy play and its copy in fm.teal.feed.play (teal's migration) are the same listen.
CREATE INDEX network_plays_by_time ON network_plays (did, played_at) WHERE played_at IS NOT NULL;
CREATE INDEX network_plays_by_host ON network_plays (url_host)
    WHERE url_host IS NOT NULL AND url_track_uri IS NULL;

-- Matched plays of visible listeners per track URI, kept by the match statement in the
-- transaction that changes the plays (reads never count rows).
CREATE TABLE network_play_counts (
    track_uri       text PRIMARY KEY,
    play_count      bigint NOT NULL DEFAULT 0,
    url_count       bigint NOT NULL DEFAULT 0   -- of which matched by URL (the rest: by metadata)
);

-- Hosts whose /track/<n> and /embed/track/<n> pages are this index's AppView's (set from
-- PLYR_TRACK_PAGE_HOSTS when the indexer starts).
CREATE TABLE track_page_hosts (
    host            text PRIMARY KEY
);

-- Title and artist keys of tracks, matched against plays' names. NULL: not computed yet (tracks
-- indexed before this migration; the indexer fills them when it starts); '' : nothing to match.
ALTER TABLE tracks ADD COLUMN match_key text, ADD COLUMN artist_key text;
CREATE INDEX tracks_by_match_key ON tracks (match_key, artist_key);
CREATE INDEX tracks_without_match_key ON tracks (uri) WHERE match_key IS NULL;
