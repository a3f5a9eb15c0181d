-- Backfill bookkeeping: one row per repo a backfill (or resync, or audit repair) has to fetch,
-- and the figures of each drift audit. Owned by indexer/backfill/state.py and audit.py.

CREATE TABLE backfill_repos (
    did             text PRIMARY KEY,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'done', 'failed')),
    rev             text COLLATE "C",     -- commit rev of the last successful fetch
    reason          text,                 -- why the last attempt failed
    attempts        integer NOT NULL DEFAULT 0,
    records         integer,              -- fm.plyr.* records in the last successful fetch
    car_bytes       bigint,
    duration_ms     integer,              -- of the last successful fetch (for --dry-run estimates)
    source          text,                 -- how the repo was found: relay, pds, did, resync, audit
    pds_url         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz
);
CREATE INDEX backfill_repos_todo ON backfill_repos (status, did) WHERE status <> 'done';

CREATE TABLE audit_runs (
    id              bigserial PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    repos_checked   integer NOT NULL DEFAULT 0,
    repos_drifted   integer NOT NULL DEFAULT 0,
    repos_failed    integer NOT NULL DEFAULT 0,
    missing         integer NOT NULL DEFAULT 0,   -- on the PDS, not in the index
    extra           integer NOT NULL DEFAULT 0,   -- in the index, not on the PDS
    stale           integer NOT NULL DEFAULT 0,   -- in both, different cid
    repaired        integer NOT NULL DEFAULT 0
);

CREATE TABLE audit_repos (
    run_id          bigint NOT NULL REFERENCES audit_runs (id) ON DELETE CASCADE,
    did             text NOT NULL,
    missing         integer NOT NULL DEFAULT 0,
    extra           integer NOT NULL DEFAULT 0,
    stale           integer NOT NULL DEFAULT 0,
    error           text,
    repaired        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, did)
);
