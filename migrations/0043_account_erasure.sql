-- Account data erasure (issue 17): what we hold about a user that is not in their repo is
-- removed on their request (fm.plyr.actor.deleteAccountData) or when their account is deleted
-- (`#account` status deleted). Each service deletes its own tables; these three tables carry
-- the request between them, with one owner each:
--
--   erasure_outbox       the indexer asks (indexer/writer/accounts.py, in the transaction that
--                        removes a deleted account's records); the AppView consumes (deletes) it
--                        and turns it into a request, as media consumes mirror_outbox
--   erasure_requests     the AppView (appview/erasure.py): one row per request, written with the
--                        AppView's own part done, in that part's transaction
--   erasure_media_parts  media (media/erasure.py): its part of a request, 'deleting' (rows gone,
--                        stored files being deleted) then 'done'
--
-- These rows keep the DID: they are the record that the erasure happened and what it removed
-- (counts and storage keys, nothing else about the person), which the user can read back.

CREATE TABLE erasure_outbox (
    id              bigserial PRIMARY KEY,
    did             text NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE erasure_requests (
    id              bigserial PRIMARY KEY,
    did             text NOT NULL,
    origin          text NOT NULL CHECK (origin IN ('user', 'account_deleted')),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    appview_receipt jsonb NOT NULL        -- {"removed": {kind: count}}: the AppView's part, done
);
CREATE INDEX erasure_requests_by_did ON erasure_requests (did, id);

CREATE TABLE erasure_media_parts (
    request_id      bigint PRIMARY KEY REFERENCES erasure_requests (id),
    status          text NOT NULL CHECK (status IN ('deleting', 'done')),
    receipt         jsonb NOT NULL,       -- {"removed": {kind: count}, "kept": {...}, "storageKeys": [...]}
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
-- The few parts whose stored files are still being deleted (a crash in between): retried.
CREATE INDEX erasure_media_parts_deleting ON erasure_media_parts (request_id) WHERE status = 'deleting';

-- The erasure deletes a listener's plays (appview/methods/plays.py `forget_listener`): found by
-- this index instead of a scan of every play.
CREATE INDEX plays_by_listener ON plays (listener_did);
-- Media finds an account's objects and its reader rows of other accounts' jobs (media/erasure.py).
CREATE INDEX media_objects_by_uploader ON media_objects (uploaded_by) WHERE uploaded_by IS NOT NULL;
CREATE INDEX media_job_readers_by_did ON media_job_readers (did);
