"""The job queue in Postgres (table media_jobs, migrations/0020_media.sql).

A job goes queued -> running -> done | failed. A worker claims the oldest due job with
`FOR UPDATE SKIP LOCKED` (many workers never take the same row) and holds it by a lease that it
renews while working; when a worker dies its lease runs out and the job is claimable again. A
failed attempt is retried after an exponential backoff until `max_attempts`; the last error
stays on the row. Every change of state is announced with NOTIFY on CHANNEL (the job's id,
status, progress and phase as JSON), which is what the SSE endpoint streams.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from core.backoff import backoff_delay
from core.db import Connection

log = logging.getLogger("plyr.media.jobs")

CHANNEL = "plyr_media_jobs"          # every state change of a job
NEW_JOB_CHANNEL = "plyr_media_new_job"  # wakes idle workers
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 600.0

Conn = Connection | asyncpg.Pool

_COLUMNS = (
    "id, kind, owner, status, attempts, max_attempts, progress, phase, error, payload, result, "
    "worker, lease_until, run_after, created_at, updated_at, finished_at"
)


class LeaseLost(RuntimeError):
    """Another worker owns the job now (our lease ran out); stop working on it."""


@dataclass
class Job:
    id: int
    kind: str
    owner: str | None
    status: str
    attempts: int
    max_attempts: int
    progress: float
    phase: str | None
    error: str | None
    payload: dict[str, Any]
    result: dict[str, Any] | None
    worker: str | None
    lease_until: datetime | None
    run_after: datetime
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Job:
        return cls(**dict(row))

    def public(self) -> dict[str, Any]:
        """What clients see (GET /jobs/{id}, and the SSE events)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "progress": round(self.progress, 4),
            "phase": self.phase,
            "error": self.error,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "result": self.result,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
        }


def backoff_s(attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: 5 s, 10 s, 20 s ... at most 10 min."""
    return backoff_delay(max(0, attempts - 1), base=BACKOFF_BASE_S, cap=BACKOFF_MAX_S)


async def _notify(conn: Conn, row: asyncpg.Record | None) -> None:
    if row is None:
        return
    payload = {
        "id": row["id"],
        "status": row["status"],
        "progress": round(float(row["progress"]), 4),
        "phase": row["phase"],
    }
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, orjson.dumps(payload).decode())


async def enqueue(
    conn: Conn,
    *,
    kind: str,
    owner: str | None,
    payload: dict[str, Any],
    max_attempts: int = 3,
    dedupe_key: str | None = None,
    delay_s: float = 0.0,
) -> int:
    """Queue a job and return its id. With `dedupe_key`, a live job of the same key is reused.
    `delay_s`: not due before then (a retry asked for from outside the worker).

    Runs on the caller's connection, so a job queued inside a transaction exists only if the
    transaction commits (the NOTIFY is delivered at commit too).
    """
    row = await conn.fetchrow(
        """INSERT INTO media_jobs (kind, owner, payload, max_attempts, dedupe_key, phase, run_after)
           VALUES ($1, $2, $3, $4, $5, 'queued', now() + make_interval(secs => $6::float8))
           ON CONFLICT (kind, dedupe_key)
               WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running')
           DO NOTHING
           RETURNING id""",
        kind,
        owner,
        payload,
        max_attempts,
        dedupe_key,
        delay_s,
    )
    if row is None:
        existing = await conn.fetchval(
            """SELECT id FROM media_jobs WHERE kind = $1 AND dedupe_key = $2
                 AND status IN ('queued', 'running') ORDER BY id DESC LIMIT 1""",
            kind,
            dedupe_key,
        )
        if existing is not None:
            return int(existing)
        return await enqueue(conn, kind=kind, owner=owner, payload=payload, max_attempts=max_attempts,
                             dedupe_key=dedupe_key, delay_s=delay_s)
    await conn.execute("SELECT pg_notify($1, $2)", NEW_JOB_CHANNEL, kind)
    return int(row["id"])


async def enqueue_blob_mirror(
    conn: Conn, *, track_uri: str, did: str, blob_cid: str, mime_type: str
) -> int:
    """Queue the mirror of a track's PDS audio blob.

    One live job per (track, blob): a replayed record does not queue the same work twice.
    """
    return await enqueue(
        conn,
        kind="mirror",
        owner=did,
        payload={"track_uri": track_uri, "did": did, "blob_cid": blob_cid, "mime_type": mime_type},
        max_attempts=5,
        dedupe_key=f"{track_uri}#{blob_cid}",
    )


_ENQUEUE_MIRRORS = """
INSERT INTO media_jobs (kind, owner, payload, max_attempts, dedupe_key, phase)
SELECT 'mirror', m.did,
       jsonb_build_object('track_uri', m.uri, 'did', m.did, 'blob_cid', m.cid, 'mime_type', m.mime),
       $5, m.uri || '#' || m.cid, 'queued'
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS m(uri, did, cid, mime)
ON CONFLICT (kind, dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running')
DO NOTHING
"""


async def enqueue_blob_mirrors(
    conn: Conn, mirrors: list[tuple[str, str, str, str]], *, max_attempts: int = 5
) -> int:
    """`enqueue_blob_mirror` for many tracks in one statement: (track_uri, did, blob_cid,
    mime_type) each. Same dedupe (one live job per track and blob); returns how many were new.

    media/mirror_requests.py calls this with the indexer's requests, in the transaction that
    takes them. A job that is done or failed does not block a new one: the caller decides when
    a mirror is needed again.
    """
    if not mirrors:
        return 0
    uris, dids, cids, mimes = (list(col) for col in zip(*mirrors, strict=True))
    status = await conn.execute(_ENQUEUE_MIRRORS, uris, dids, cids, mimes, max_attempts)
    added = int(status.rsplit(" ", 1)[1])  # "INSERT 0 <rows>"
    if added:
        await conn.execute("SELECT pg_notify($1, $2)", NEW_JOB_CHANNEL, "mirror")
    return added


async def claim(
    pool: Conn, *, worker: str, lease_s: float, kinds: list[str] | None = None
) -> Job | None:
    """Take the oldest due job (queued and due, or running with an expired lease), or None."""
    async with _acquire(pool) as conn, conn.transaction():
        # A job whose lease ran out with no attempts left fails here instead of running again.
        for expired in await conn.fetch(
            f"""UPDATE media_jobs SET status = 'failed', finished_at = now(), updated_at = now(),
                   lease_until = NULL,
                   error = coalesce(error || '; ', '') || 'the worker stopped before finishing (lease expired)'
               WHERE id IN (SELECT id FROM media_jobs
                            WHERE status = 'running' AND lease_until < now()
                              AND attempts >= max_attempts
                            FOR UPDATE SKIP LOCKED)
               RETURNING {_COLUMNS}"""
        ):
            await _notify(conn, expired)
        row = await conn.fetchrow(
            f"""UPDATE media_jobs j SET status = 'running', attempts = j.attempts + 1, worker = $1,
                   lease_until = now() + make_interval(secs => $2), updated_at = now(),
                   phase = 'started'
               WHERE j.id = (
                   SELECT id FROM media_jobs
                   WHERE ((status = 'queued' AND run_after <= now())
                          OR (status = 'running' AND lease_until < now()))
                     AND ($3::text[] IS NULL OR kind = ANY($3::text[]))
                   ORDER BY run_after, id
                   LIMIT 1
                   FOR UPDATE SKIP LOCKED)
               RETURNING {_COLUMNS}""",
            worker,
            lease_s,
            kinds,
        )
        if row is None:
            return None
        await _notify(conn, row)
        return Job.from_row(row)


async def report(
    pool: Conn,
    job: Job,
    *,
    worker: str,
    lease_s: float,
    progress: float | None = None,
    phase: str | None = None,
) -> None:
    """Record progress and renew the lease; raise LeaseLost when the job is no longer ours."""
    async with _acquire(pool) as conn:
        row = await conn.fetchrow(
            f"""UPDATE media_jobs SET progress = coalesce($3, progress), phase = coalesce($4, phase),
                   lease_until = now() + make_interval(secs => $5), updated_at = now()
               WHERE id = $1 AND worker = $2 AND status = 'running' AND attempts = $6
               RETURNING {_COLUMNS}""",
            job.id,
            worker,
            progress,
            phase,
            lease_s,
            job.attempts,
        )
        if row is None:
            raise LeaseLost(f"job {job.id} is no longer held by {worker}")
        await _notify(conn, row)


async def complete(pool: Conn, job: Job, *, worker: str, result: dict[str, Any]) -> bool:
    """Mark the job done with its result; False when the lease was lost (another worker has it)."""
    async with _acquire(pool) as conn:
        row = await conn.fetchrow(
            f"""UPDATE media_jobs SET status = 'done', progress = 1, phase = 'done', result = $3,
                   error = NULL, lease_until = NULL, finished_at = now(), updated_at = now()
               WHERE id = $1 AND worker = $2 AND status = 'running' AND attempts = $4
               RETURNING {_COLUMNS}""",
            job.id,
            worker,
            result,
            job.attempts,
        )
        await _notify(conn, row)
        return row is not None


async def fail(pool: Conn, job: Job, *, worker: str, error: str, retry: bool = True) -> str | None:
    """Record a failed attempt: queued again after a backoff, or failed for good.

    Returns the new status (None when the lease was lost).
    """
    again = retry and job.attempts < job.max_attempts
    async with _acquire(pool) as conn:
        row = await conn.fetchrow(
            f"""UPDATE media_jobs SET
                   status = CASE WHEN $3 THEN 'queued' ELSE 'failed' END,
                   phase = CASE WHEN $3 THEN 'waiting to retry' ELSE 'failed' END,
                   error = $4, lease_until = NULL, worker = NULL,
                   run_after = CASE WHEN $3 THEN now() + make_interval(secs => $5) ELSE run_after END,
                   finished_at = CASE WHEN $3 THEN NULL ELSE now() END,
                   updated_at = now()
               WHERE id = $1 AND worker = $2 AND status = 'running' AND attempts = $6
               RETURNING {_COLUMNS}""",
            job.id,
            worker,
            again,
            error[:2000],
            backoff_s(job.attempts),
            job.attempts,
        )
        await _notify(conn, row)
        return None if row is None else str(row["status"])


DEFER_BASE_S = 30.0


async def defer(pool: Conn, job: Job, *, worker: str, error: str) -> str | None:
    """Put a job back because the machine ran out of something (disk, memory): queued again
    after a backoff that grows with each deferral (payload.deferrals), and the attempt does not
    count against max_attempts - the input is not at fault, so it never fails for this.

    Returns the new status (None when the lease was lost)."""
    async with _acquire(pool) as conn:
        row = await conn.fetchrow(
            f"""UPDATE media_jobs SET
                   status = 'queued', phase = 'waiting for resources', error = $3,
                   attempts = attempts - 1, lease_until = NULL, worker = NULL,
                   payload = payload || jsonb_build_object(
                       'deferrals', coalesce((payload->>'deferrals')::int, 0) + 1),
                   run_after = now() + make_interval(secs => least($5::float8,
                       $6::float8 * power(2, least(20, coalesce((payload->>'deferrals')::int, 0))))),
                   updated_at = now()
               WHERE id = $1 AND worker = $2 AND status = 'running' AND attempts = $4
               RETURNING {_COLUMNS}""",
            job.id,
            worker,
            error[:2000],
            job.attempts,
            BACKOFF_MAX_S,
            DEFER_BASE_S,
        )
        await _notify(conn, row)
        return None if row is None else str(row["status"])


async def release(pool: Conn, job: Job, *, worker: str) -> bool:
    """Give a job back untouched (the worker is shutting down): queued again at once, and the
    interrupted attempt does not count against max_attempts."""
    async with _acquire(pool) as conn:
        row = await conn.fetchrow(
            f"""UPDATE media_jobs SET status = 'queued', phase = 'queued', attempts = attempts - 1,
                   lease_until = NULL, worker = NULL, run_after = now(), updated_at = now()
               WHERE id = $1 AND worker = $2 AND status = 'running' AND attempts = $3
               RETURNING {_COLUMNS}""",
            job.id,
            worker,
            job.attempts,
        )
        await _notify(conn, row)
        return row is not None


async def add_reader(conn: Conn, job_id: int, did: str) -> None:
    """Let `did` read the job (GET /jobs/{id}) although another account owns it."""
    await conn.execute(
        """INSERT INTO media_job_readers (job_id, did)
           SELECT id, $2 FROM media_jobs WHERE id = $1 AND owner IS DISTINCT FROM $2
           ON CONFLICT DO NOTHING""",
        job_id,
        did,
    )


async def may_read(conn: Conn, job: Job, did: str | None) -> bool:
    """Whether the account `did` may see the job: its owner, or an uploader it was handed to."""
    if did is None:
        return False
    if job.owner == did:
        return True
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM media_job_readers WHERE job_id = $1 AND did = $2)", job.id, did)
    )


async def get_job(conn: Conn, job_id: int) -> Job | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM media_jobs WHERE id = $1", job_id)
    return Job.from_row(row) if row else None


class _acquire:
    """`async with _acquire(pool_or_conn) as conn`: a pool lends a connection, a connection is itself."""

    def __init__(self, target: Conn) -> None:
        self.target = target
        self._ctx: Any = None

    async def __aenter__(self) -> Connection:
        if isinstance(self.target, asyncpg.Pool):
            self._ctx = self.target.acquire()
            return await self._ctx.__aenter__()
        return self.target

    async def __aexit__(self, *exc: object) -> None:
        if self._ctx is not None:
            await self._ctx.__aexit__(*exc)
