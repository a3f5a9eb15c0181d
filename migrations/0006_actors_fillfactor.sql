-- Every batch moves the repo_rev of the actors it wrote (indexer/writer/apply.py). With full
-- pages each such update is a new tuple on another page and a new entry in every index of
-- actors (six, one a trigram GiST); free room on the page lets Postgres update in place (HOT:
-- no index entries, as no indexed column changes). Measured on 1,000 actors upserted 12 times:
-- 0.5% HOT and a median 84 ms at fillfactor 100, 48% HOT and 51 ms at 70 (docs/BENCHMARKS.md,
-- issue 14). Applies to pages written from now on; a VACUUM FULL would repack existing ones.
ALTER TABLE actors SET (fillfactor = 70);
