-- Request counts per key (service, client address or DID) and fixed window, shared by every
-- AppView and media process (core/ratelimit.py: each process adds its hits in one batched
-- upsert per sync interval, never per request). Owned by core; numbered in the appview range,
-- whose processes are its main writers. UNLOGGED: no WAL for counters that live minutes; a
-- crash empties the table, which only restarts the current windows.
CREATE UNLOGGED TABLE rate_limits (
    key          text    NOT NULL,
    window_start bigint  NOT NULL,  -- epoch seconds
    window_end   bigint  NOT NULL,  -- ended windows are deleted (DELETE ... WHERE window_end < now)
    hits         integer NOT NULL,
    PRIMARY KEY (key, window_start)
);
