-- Indexes that later ones made redundant, dropped to cut the cost of every indexed write:
-- search uses the GiST trigram index on title || ' ' || artist (0010), not the two GIN ones of
-- 0001; top-by-likes uses track_counts_by_likes_uri (0010), which has the keys of
-- track_counts_by_likes (0001) as its prefix.
DROP INDEX tracks_title_trgm;
DROP INDEX tracks_artist_trgm;
DROP INDEX track_counts_by_likes;
