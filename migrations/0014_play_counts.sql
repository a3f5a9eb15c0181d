-- Play counts get their own table, written only by the plays module (appview/methods/plays.py)
-- in the transaction of the play row; the indexer's track_counts keeps likes and comments.
CREATE TABLE play_counts (
    track_uri       text PRIMARY KEY,
    play_count      bigint NOT NULL DEFAULT 0
);
INSERT INTO play_counts (track_uri, play_count)
SELECT subject_uri, play_count FROM track_counts WHERE play_count <> 0;

-- All plays counted, spread over 16 slots as index_totals is (0005); the figure is the sum.
CREATE TABLE play_totals (
    slot            smallint PRIMARY KEY,
    plays           bigint NOT NULL DEFAULT 0
);
INSERT INTO play_totals (slot, plays) SELECT 0, coalesce(sum(play_count), 0) FROM play_counts;

ALTER TABLE track_counts DROP COLUMN play_count;
