-- Likes keep the record as published, like the other record tables do, so that
-- `plyr records dump` and audits can compare the index with the PDS byte-for-byte in JSON form
-- (created_at alone loses the original datetime spelling).
ALTER TABLE likes ADD COLUMN record jsonb;
