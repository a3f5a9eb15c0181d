-- The latest-tracks feed reads only keys when the AppView's view cache is on (appview/hydrate.py):
-- uri and sort_at for the order, did for the hidden-actor anti-join. With did in the index the
-- page is an index-only scan. It has the keys of tracks_latest (0001), so it replaces it.
CREATE INDEX tracks_latest_keys ON tracks (sort_at DESC, uri DESC) INCLUDE (did);
DROP INDEX tracks_latest;
