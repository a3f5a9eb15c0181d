-- The orphan sweep (media/sweep.py) asks, for each object it finds in storage, whether a row
-- still refers to it: media_objects and media_renditions by their unique storage_key, finished
-- exports by the key in their job's result. This index answers the last one without reading
-- every job.
CREATE INDEX media_jobs_export_key ON media_jobs ((result ->> 'key')) WHERE kind = 'export';

-- Who may read a job besides its owner. An upload whose bytes already have a live job (one job
-- per sha-256) is handed that job's id, although another account queued it: the uploader is
-- recorded here so that GET /jobs/{id} lets them follow it.
CREATE TABLE media_job_readers (
    job_id  bigint NOT NULL REFERENCES media_jobs (id) ON DELETE CASCADE,
    did     text NOT NULL,
    PRIMARY KEY (job_id, did)
);
