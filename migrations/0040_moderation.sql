-- Moderation: labels from labelers, our own labeler, operators' actions and users' reports.

-- Labels of the labelers we subscribe to (owner: indexer/labels/). One row per (src, uri, val):
-- the spec's one coherent state per source, subject and value, the newest `cts` winning. A
-- negation stays as a row with neg = true, so an older label replayed later cannot revive it.
-- `view` is the label's JSON form without `sig` (what views return, exact strings as signed).
CREATE TABLE labels (
    uri         text NOT NULL,          -- the subject: an at:// record URI, or a DID (an account)
    src         text NOT NULL,          -- the labeler's DID
    val         text NOT NULL,
    cid         text,                   -- NULL: every version of the subject
    neg         boolean NOT NULL DEFAULT false,
    cts         timestamptz NOT NULL,
    exp         timestamptz,            -- NULL: never expires
    sig         bytea NOT NULL,
    view        jsonb NOT NULL,
    seq         bigint NOT NULL,        -- the labeler's stream seq that brought it
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (uri, src, val)
);
-- The few labels that remove content everywhere: every view anti-joins on these.
CREATE INDEX labels_removing ON labels (uri, src)
    WHERE NOT neg AND val IN ('!takedown', '!suspend', '!hide');

CREATE TABLE label_cursors (
    src         text PRIMARY KEY,
    cursor      bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Frames and labels refused (bad frame, bad signature, wrong src, ...): recorded, never applied.
CREATE TABLE label_rejects (
    id          bigserial PRIMARY KEY,
    src         text NOT NULL,
    seq         bigint,
    reason      text NOT NULL,
    label       jsonb,                  -- the label as received, when it decoded
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX label_rejects_recent ON label_rejects (received_at);

-- The labels our own labeler signed (owner: appview/labeler/), in stream order. A negation
-- deletes the rows it negates and stays itself (specs/label.md: the stream keeps the negation).
CREATE TABLE own_labels (
    seq         bigserial PRIMARY KEY,
    uri         text NOT NULL,
    val         text NOT NULL,
    cid         text,
    neg         boolean NOT NULL DEFAULT false,
    cts         text NOT NULL,          -- exactly as signed
    exp         text,
    sig         bytea NOT NULL,
    signing_key text NOT NULL,          -- did:key that signed it (keys rotate)
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX own_labels_uri ON own_labels (uri text_pattern_ops, seq);

-- What operators did (owner: appview/moderation/): the audit log.
CREATE TABLE moderation_actions (
    id          bigserial PRIMARY KEY,
    action      text NOT NULL,          -- takedown, restore, label, unlabel, resolve-reports
    subject     text NOT NULL,          -- at:// URI or DID
    subject_cid text,
    labels      text[] NOT NULL DEFAULT '{}',
    reason      text NOT NULL DEFAULT '',
    moderator   text NOT NULL,          -- a moderator DID, or `cli:<user>` for `plyr admin`
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX moderation_actions_subject ON moderation_actions (subject, id);

-- Users' reports (owner: appview/moderation/), grouped by subject in the review queue.
CREATE TABLE reports (
    id          bigserial PRIMARY KEY,
    subject     text NOT NULL,          -- at:// URI or DID
    subject_cid text,
    reason_type text NOT NULL,          -- com.atproto.moderation.defs#reasonType
    reason      text NOT NULL DEFAULT '',
    reported_by text NOT NULL,          -- the reporter's DID (service auth)
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    resolved_by text,
    action_id   bigint REFERENCES moderation_actions (id)
);
CREATE INDEX reports_open ON reports (subject, created_at) WHERE resolved_at IS NULL;
CREATE INDEX reports_by ON reports (reported_by, created_at);

-- An account taken down by a moderation labeler (owner: indexer/writer/accounts.py): hidden
-- like a taken-down status from its PDS, whatever its status says.
ALTER TABLE actors ADD COLUMN moderation_takedown boolean NOT NULL DEFAULT false;
