-- Counters the writer keeps in the transaction of the rows they count (indexer/writer/counts.py),
-- so that reads never count rows; and the outbox of PDS blob mirror requests for media
-- (indexer/writer/outbox.py). Filled from the rows already indexed.

-- Per actor, all its rows whatever its visibility (profiles show only visible actors).
CREATE TABLE actor_counts (
    did             text PRIMARY KEY,
    track_count     bigint NOT NULL DEFAULT 0,
    list_count      bigint NOT NULL DEFAULT 0,
    like_count      bigint NOT NULL DEFAULT 0,
    comment_count   bigint NOT NULL DEFAULT 0,
    track_seconds   numeric NOT NULL DEFAULT 0  -- durations are any 64-bit integer: no overflow
);

-- Platform totals over visible actors, spread over 16 slots (a writer adds to the slot of its
-- transaction, so concurrent writers rarely wait on one row); the figure is the sum, a missing
-- slot is a zero.
CREATE TABLE index_totals (
    slot            smallint PRIMARY KEY,
    tracks          bigint NOT NULL DEFAULT 0,
    artists         bigint NOT NULL DEFAULT 0,  -- visible actors with at least one track
    track_seconds   numeric NOT NULL DEFAULT 0,
    likes           bigint NOT NULL DEFAULT 0,
    comments        bigint NOT NULL DEFAULT 0
);

INSERT INTO actor_counts (did, track_count, list_count, like_count, comment_count, track_seconds)
SELECT did, sum(t), sum(li), sum(l), sum(c), sum(s) FROM (
  SELECT did, 1 AS t, 0 AS li, 0 AS l, 0 AS c, coalesce(duration_s, 0)::numeric AS s FROM tracks
  UNION ALL SELECT did, 0, 1, 0, 0, 0 FROM lists
  UNION ALL SELECT did, 0, 0, 1, 0, 0 FROM likes
  UNION ALL SELECT did, 0, 0, 0, 1, 0 FROM comments) r
GROUP BY did;

INSERT INTO index_totals (slot, tracks, artists, track_seconds, likes, comments)
SELECT 0, coalesce(sum(c.track_count), 0), count(*) FILTER (WHERE c.track_count > 0),
       coalesce(sum(c.track_seconds), 0), coalesce(sum(c.like_count), 0),
       coalesce(sum(c.comment_count), 0)
FROM actor_counts c LEFT JOIN actors a ON a.did = c.did WHERE coalesce(a.visible, true);

-- Mirror requests: written by the indexer with the track row, consumed (deleted) by media,
-- which turns each into at most one live mirror job. NOTIFY plyr_mirror_outbox wakes media.
CREATE TABLE mirror_outbox (
    id              bigserial PRIMARY KEY,
    track_uri       text NOT NULL,
    did             text NOT NULL,
    blob_cid        text NOT NULL,
    mime_type       text NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now()
);
