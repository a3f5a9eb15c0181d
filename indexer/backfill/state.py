"""Per-repo backfill state in Postgres (`backfill_repos`, migrations/0030_backfill.sql).

A repo is `pending` until fetched, then `done` (with the commit rev and record count) or `failed`
(with the reason and `attempts`, the failed attempts since the last success). Discovery only
ever adds rows, so an interrupted backfill picks up the pending rows where it stopped; `--retry-failed` takes the failed ones too,
`--force` fetches done ones again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import asyncpg

from core.db import Connection

_ADD = """
INSERT INTO backfill_repos (did, source)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (did) DO NOTHING
"""


async def add_repos(pool: asyncpg.Pool | Connection, repos: Mapping[str, str]) -> int:
    """Record newly discovered repos as pending; returns how many were new."""
    if not repos:
        return 0
    dids = list(repos)
    result = await pool.execute(_ADD, dids, [repos[d] for d in dids])
    return int(result.split()[-1])


async def reset(pool: asyncpg.Pool | Connection, dids: Iterable[str], source: str) -> None:
    """Make repos pending again (force a fetch), adding the ones not yet known."""
    dids = list(dids)
    await pool.execute(
        """INSERT INTO backfill_repos (did, source) SELECT d, $2 FROM unnest($1::text[]) AS d
           ON CONFLICT (did) DO UPDATE SET status = 'pending', updated_at = now()""",
        dids,
        source,
    )


async def todo(
    pool: asyncpg.Pool | Connection, dids: Iterable[str] | None, *, retry_failed: bool
) -> list[str]:
    """The repos still to fetch: pending ones (and failed ones with `retry_failed`)."""
    statuses = ["pending", "failed"] if retry_failed else ["pending"]
    if dids is None:
        rows = await pool.fetch(
            "SELECT did FROM backfill_repos WHERE status = ANY($1::text[]) ORDER BY did", statuses
        )
    else:
        rows = await pool.fetch(
            """SELECT did FROM backfill_repos WHERE status = ANY($1::text[]) AND did = ANY($2::text[])
               ORDER BY did""",
            statuses,
            list(dids),
        )
    return [r["did"] for r in rows]


async def mark_done(
    conn: asyncpg.Pool | Connection,
    did: str,
    *,
    rev: str,
    records: int,
    car_bytes: int,
    duration_ms: int,
    pds_url: str | None,
    source: str,
) -> None:
    await conn.execute(
        """INSERT INTO backfill_repos AS b (did, status, rev, records, car_bytes, duration_ms, pds_url,
                                           source, attempts, done_at, reason)
           VALUES ($1, 'done', $2, $3, $4, $5, $6, $7, 0, now(), NULL)
           ON CONFLICT (did) DO UPDATE SET status = 'done', rev = excluded.rev,
             records = excluded.records, car_bytes = excluded.car_bytes,
             duration_ms = excluded.duration_ms, pds_url = excluded.pds_url, reason = NULL,
             attempts = 0, done_at = now(), updated_at = now()""",
        did,
        rev,
        records,
        car_bytes,
        duration_ms,
        pds_url,
        source,
    )


async def mark_failed(
    pool: asyncpg.Pool | Connection,
    did: str,
    reason: str,
    *,
    source: str,
    pds_url: str | None = None,
) -> None:
    await pool.execute(
        """INSERT INTO backfill_repos AS b (did, status, reason, attempts, source, pds_url)
           VALUES ($1, 'failed', $2, 1, $3, $4)
           ON CONFLICT (did) DO UPDATE SET status = 'failed', reason = excluded.reason,
             attempts = b.attempts + 1, pds_url = coalesce(excluded.pds_url, b.pds_url),
             updated_at = now()""",
        did,
        reason[:1000],
        source,
        pds_url,
    )


@dataclass
class RepoState:
    did: str
    status: str
    rev: str | None
    reason: str | None
    attempts: int
    records: int | None


async def get(pool: asyncpg.Pool | Connection, did: str) -> RepoState | None:
    row = await pool.fetchrow(
        "SELECT did, status, rev, reason, attempts, records FROM backfill_repos WHERE did = $1", did
    )
    return RepoState(**dict(row)) if row else None


async def counts(pool: asyncpg.Pool | Connection) -> dict[str, int]:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM backfill_repos GROUP BY status")
    out = {"pending": 0, "done": 0, "failed": 0}
    out.update({r["status"]: int(r["n"]) for r in rows})
    return out


async def mean_duration_s(pool: asyncpg.Pool | Connection) -> float | None:
    """Mean fetch time of the last successful fetches (for --dry-run estimates)."""
    value = await pool.fetchval(
        """SELECT avg(duration_ms) FROM (SELECT duration_ms FROM backfill_repos
           WHERE status = 'done' AND duration_ms IS NOT NULL ORDER BY done_at DESC LIMIT 1000) t"""
    )
    return float(value) / 1000 if value is not None else None


async def failures(
    pool: asyncpg.Pool | Connection, dids: Iterable[str] | None = None
) -> list[tuple[str, str]]:
    if dids is None:
        rows = await pool.fetch(
            "SELECT did, reason FROM backfill_repos WHERE status = 'failed' ORDER BY did"
        )
    else:
        rows = await pool.fetch(
            """SELECT did, reason FROM backfill_repos WHERE status = 'failed'
               AND did = ANY($1::text[]) ORDER BY did""",
            list(dids),
        )
    return [(r["did"], r["reason"] or "") for r in rows]
