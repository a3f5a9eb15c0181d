-- Index fidelity (docs/invariants.md): every record our lexicons accept is stored whole, and the
-- newest invalid version of a record hides it like a delete.

-- Data-model integers are 64-bit; the track lexicon bounds duration only below.
ALTER TABLE tracks ALTER COLUMN duration_s TYPE bigint;

-- jsonb (and text) cannot hold U+0000, which data-model strings may contain. Such a record is
-- stored in `record` with U+FFFD in place of each NUL (what the views read) and exactly, as its
-- JSON bytes, in `record_exact` (what `records dump` gives back). NULL for every other record.
ALTER TABLE tracks ADD COLUMN record_exact bytea;
ALTER TABLE likes ADD COLUMN record_exact bytea;
ALTER TABLE comments ADD COLUMN record_exact bytea;
ALTER TABLE lists ADD COLUMN record_exact bytea;
ALTER TABLE profiles ADD COLUMN record_exact bytea;

-- A tombstone written because the newest version of a record is invalid names that version's
-- cid: the same version, valid again after a lexicon fix (`plyr deadletters replay`), may come
-- back at the same rev. NULL for real deletes.
ALTER TABLE tombstones ADD COLUMN hidden_cid text;

-- Dead letters are looked up by record (backfill and replays do not pile up duplicates).
CREATE INDEX dead_letters_pending_uri ON dead_letters (uri) WHERE replayed_at IS NULL;
