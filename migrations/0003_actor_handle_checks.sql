-- Handles are verified in the background (indexer/handles.py), never in the write path. A check
-- is wanted when an actor row is created and whenever an #identity event names the actor; the
-- request is written with the batch (and its cursor), so a crash cannot lose it. Two counters
-- rather than a flag: a request made while a lookup is running outlives that lookup.
ALTER TABLE actors
    ADD COLUMN handle_check_wanted   bigint      NOT NULL DEFAULT 0,
    ADD COLUMN handle_check_done     bigint      NOT NULL DEFAULT 0,
    ADD COLUMN handle_check_after    timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN handle_check_failures integer     NOT NULL DEFAULT 0;
-- New rows want a check; existing rows only if they still have no handle (e.g. backfilled ones).
ALTER TABLE actors ALTER COLUMN handle_check_wanted SET DEFAULT 1;
UPDATE actors SET handle_check_wanted = 1 WHERE handle IS NULL;
CREATE INDEX actors_handle_check_due ON actors (handle_check_after)
    WHERE handle_check_wanted > handle_check_done;
