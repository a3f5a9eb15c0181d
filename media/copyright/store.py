"""The SQL of copyright scanning on media's side: asking for scans, writing `copyright_scans`
rows (media/copyright/ is their one writer), and reading what a scan needs (the audio object,
the tracks that play it, the allow-list of original artists, the backlog)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core.db import Connection
from media import jobs

SCAN_KIND = "copyright_scan"
SCAN_MAX_ATTEMPTS = 5  # attempts per request; the waits between them: media/jobs.py backoff_s
STATUSES = ("clear", "flagged", "error")

Conn = Connection | asyncpg.Pool


async def request_scan(
    conn: Conn,
    sha256: str,
    *,
    owner: str | None = None,
    track_uri: str | None = None,
    previous_attempts: int = 0,
    delay_s: float = 0.0,
    force: bool = False,
) -> int | None:
    """Queue a scan of the audio object `sha256` (one live job per audio); its job id, or None
    when the audio's newest scan is `clear` or `flagged` already (`force`: scan again anyway).
    `owner`, the artist who brought the audio (its uploader, the account whose blob we copied),
    joins its `copyright_uploaders`; an artist new to audio scanned before has it scanned again
    (the same bytes by a second artist: a copy of the first's).

    On the caller's connection: asked inside a transaction, the job exists only if it commits."""
    if owner is not None:
        added = await conn.fetchval(
            "INSERT INTO copyright_uploaders (sha256, did) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
            sha256, owner,
        )  # fmt: skip
        force = force or bool(added)
    if not force:
        newest = await conn.fetchval(
            "SELECT status FROM copyright_scans WHERE sha256 = $1 ORDER BY id DESC LIMIT 1", sha256
        )
        if newest in ("clear", "flagged"):
            return None
    job_id = await jobs.enqueue(
        conn,
        kind=SCAN_KIND,
        owner=owner,
        payload={"sha256": sha256, "track_uri": track_uri, "previous_attempts": previous_attempts},
        max_attempts=SCAN_MAX_ATTEMPTS,
        dedupe_key=sha256,
        delay_s=delay_s,
    )
    if track_uri is not None:
        # A live job asked for without a track (the upload, the blob's ingest) learns it now.
        await conn.execute(
            "UPDATE media_jobs SET payload = payload || jsonb_build_object('track_uri', $2::text) "
            "WHERE id = $1 AND status = 'queued' AND payload ->> 'track_uri' IS NULL",
            job_id, track_uri,
        )  # fmt: skip
    return job_id


@dataclass(frozen=True)
class Audio:
    sha256: str
    storage_key: str
    blob_cid: str | None
    uploaded_by: str | None
    duration_s: float | None


async def audio_object(conn: Conn, sha256: str) -> Audio | None:
    row = await conn.fetchrow(
        "SELECT sha256, storage_key, blob_cid, uploaded_by, (probe ->> 'duration_s')::float8 AS duration_s "
        "FROM media_objects WHERE sha256 = $1 AND kind = 'audio'",
        sha256,
    )
    return Audio(**dict(row)) if row is not None else None


async def tracks_of(conn: Conn, sha256: str) -> list[tuple[str, str]]:
    """(track uri, artist DID) of the tracks that play the audio now (migrations/0042)."""
    rows = await conn.fetch("SELECT track_uri, did FROM copyright_audio_tracks($1)", sha256)
    return [(r["track_uri"], r["did"]) for r in rows]


async def own_fingerprint(conn: Conn, sha256: str) -> int | None:
    """The fingerprint an earlier scan stored for this audio (one per audio is enough)."""
    value = await conn.fetchval(
        "SELECT fingerprint_id FROM copyright_scans WHERE sha256 = $1 AND fingerprint_id IS NOT NULL "
        "ORDER BY id LIMIT 1",
        sha256,
    )
    return int(value) if value is not None else None


async def audio_of_fingerprints(conn: Conn, fingerprint_ids: list[int]) -> dict[int, str]:
    """fingerprint id -> the audio (sha-256) whose scan stored it, for those of ours."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (fingerprint_id) fingerprint_id, sha256 FROM copyright_scans "
        "WHERE fingerprint_id = ANY($1::bigint[]) ORDER BY fingerprint_id, id",
        fingerprint_ids,
    )
    return {int(r["fingerprint_id"]): r["sha256"] for r in rows}


async def first_artist(conn: Conn, sha256: str) -> str | None:
    """The artist who brought the audio first (copyright_uploaders; else the object's uploader)."""
    value = await conn.fetchval(
        "SELECT coalesce((SELECT did FROM copyright_uploaders WHERE sha256 = $1 ORDER BY first_seen, did LIMIT 1), "
        "(SELECT uploaded_by FROM media_objects WHERE sha256 = $1))",
        sha256,
    )
    return str(value) if value is not None else None


async def later_artists(conn: Conn, sha256: str) -> list[str]:
    """The artists who brought the same audio after its first (in order)."""
    rows = await conn.fetch("SELECT did FROM copyright_uploaders WHERE sha256 = $1 ORDER BY first_seen, did", sha256)
    return [r["did"] for r in rows[1:]]


async def first_seen(conn: Conn, shas: list[str]) -> dict[str, datetime]:
    """When we first held each audio (its first uploader or copy, else the object's row)."""
    rows = await conn.fetch(
        "SELECT o.sha256, least(o.created_at, (SELECT min(u.first_seen) FROM copyright_uploaders u "
        "WHERE u.sha256 = o.sha256)) AS at FROM media_objects o WHERE o.sha256 = ANY($1::text[])",
        shas,
    )
    return {r["sha256"]: r["at"] for r in rows}


async def uploader_of(conn: Conn, sha256: str) -> str | None:
    value = await conn.fetchval("SELECT uploaded_by FROM media_objects WHERE sha256 = $1", sha256)
    return str(value) if value is not None else None


async def allowlisted(conn: Conn, artists: set[str], reference_ids: list[int]) -> set[tuple[str, int]]:
    """The (artist, reference) pairs of the allow-list (appview/moderation/ writes it)."""
    if not artists or not reference_ids:
        return set()
    rows = await conn.fetch(
        "SELECT artist_did, reference_id FROM copyright_allowlist "
        "WHERE artist_did = ANY($1::text[]) AND reference_id = ANY($2::bigint[])",
        sorted(artists),
        reference_ids,
    )
    return {(r["artist_did"], int(r["reference_id"])) for r in rows}


async def record_scan(
    conn: Conn,
    *,
    audio: Audio | None,
    sha256: str,
    track_uri: str | None,
    job_id: int | None,
    attempt: int,
    status: str,
    started_at: datetime,
    matches: list[dict[str, Any]] | None = None,
    engine: str | None = None,
    fingerprint_id: int | None = None,
    duration_s: float | None = None,
    error: str | None = None,
    retry_in_s: float | None = None,
    external: bool = False,
) -> int:
    """Write one attempt's row; its id. `retry_in_s` (errors only): when the next attempt is due;
    `external`: the row of an external recognition service (recognition.py)."""
    assert status in STATUSES
    value = await conn.fetchval(
        """INSERT INTO copyright_scans
               (sha256, storage_key, blob_cid, track_uri, job_id, attempt, status, matches, engine,
                fingerprint_id, duration_s, error, created_at, next_attempt_at, external)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                   CASE WHEN $14::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $14::float8) END, $15)
           RETURNING id""",
        sha256, audio.storage_key if audio else None, audio.blob_cid if audio else None, track_uri, job_id,
        attempt, status, matches or [], engine, fingerprint_id, duration_s,
        None if error is None else error[:2000], started_at, retry_in_s, external,
    )  # fmt: skip
    return int(value)


async def attempts_so_far(conn: Conn, sha256: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM copyright_scans WHERE sha256 = $1", sha256))


# The backlog of `plyr moderation scan`: audio objects with no live scan job, and ...
BACKLOG = {
    "unscanned": "NOT EXISTS (SELECT 1 FROM copyright_scans s WHERE s.sha256 = o.sha256)",
    "errors": "(SELECT s.status FROM copyright_scans s WHERE s.sha256 = o.sha256 ORDER BY s.id DESC LIMIT 1) = 'error'",
    "all": "true",
}
_NO_LIVE_JOB = (
    "NOT EXISTS (SELECT 1 FROM media_jobs j WHERE j.kind = 'copyright_scan' AND j.dedupe_key = o.sha256 "
    "AND j.status IN ('queued', 'running'))"
)


def _backlog_where(which: str) -> str:
    return f"o.kind = 'audio' AND {BACKLOG[which]} AND {_NO_LIVE_JOB}"


async def backlog_size(conn: Conn, which: str, max_duration_s: float | None) -> tuple[int, float, int]:
    """(audio objects to scan, their seconds, objects left out as longer than max_duration_s)."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE NOT too_long) AS n, "
        "coalesce(sum(d) FILTER (WHERE NOT too_long), 0) AS seconds, count(*) FILTER (WHERE too_long) AS skipped "
        "FROM (SELECT coalesce((o.probe ->> 'duration_s')::float8, 0) AS d, "
        "             ($1::float8 IS NOT NULL AND coalesce((o.probe ->> 'duration_s')::float8, 0) > $1) AS too_long "
        f"      FROM media_objects o WHERE {_backlog_where(which)}) b",
        max_duration_s,
    )
    assert row is not None
    return int(row["n"]), float(row["seconds"]), int(row["skipped"])


async def backlog(
    pool: asyncpg.Pool, which: str, max_duration_s: float | None, page: int = 500
) -> AsyncIterator[Audio]:
    """The audio objects to scan, by sha-256, a page at a time (the list is never all in memory)."""
    after = ""
    while True:
        rows = await pool.fetch(
            "SELECT sha256, storage_key, blob_cid, uploaded_by, (probe ->> 'duration_s')::float8 AS duration_s "
            f"FROM media_objects o WHERE {_backlog_where(which)} AND o.sha256 > $1 "
            "AND ($2::float8 IS NULL OR coalesce((o.probe ->> 'duration_s')::float8, 0) <= $2) "
            "ORDER BY o.sha256 LIMIT $3",
            after, max_duration_s, page,
        )  # fmt: skip
        for row in rows:
            yield Audio(**dict(row))
        if len(rows) < page:
            return
        after = rows[-1]["sha256"]


async def lock_catalog(conn: Connection, *, shared: bool) -> None:
    """The catalog lock, to the end of the transaction: a scan's matching holds it shared, adding
    a reference exclusive; so either the scan sees the reference or the reference's reverse
    lookup (rescan.py, after its commit) sees the scan's fingerprint."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(f"SELECT {fn}(hashtextextended('plyr.copyright.catalog', 0))")
