-- The audit's fourth kind of drift: a record whose version on the PDS is invalid under our
-- lexicons but which the index still serves.
ALTER TABLE audit_runs ADD COLUMN invalid integer NOT NULL DEFAULT 0;
ALTER TABLE audit_repos ADD COLUMN invalid integer NOT NULL DEFAULT 0;
