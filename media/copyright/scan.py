"""One scan of one audio object, and the `copyright_scan` job that runs it.

A scan reads the stored object (the local file in place, or a temporary copy from S3), has it
fingerprinted whole (media/fingerprint/), stores the fingerprint (once per audio), finds the
matches of at least MIN_MATCH_S in the reference catalog and in the other audio we hold, and
writes its `copyright_scans` row: `flagged` with the matches, `clear` without, or `error` with the
message when anything about the audio fails (the object missing from storage, ffmpeg failing on
a corrupt file). What the matches are and leave out (the audio itself, an artist's own re-uploads, original
artists; copies of the same bytes by a later artist; decisions that carry over): matches.py.

The job (payload {sha256, track_uri?, previous_attempts?}) turns an `error` into a failed attempt,
which the worker retries after media/jobs.py's backoff, up to store.SCAN_MAX_ATTEMPTS; each
attempt writes its own row, an error's row saying when the next one is due.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from media import fingerprint
from media.copyright import store
from media.copyright.matches import artists_of, carry_decisions, copy_matches, did_of, kept_matches
from media.copyright.recognition import ExternalOutcome, recognize_audio, recognizer_from_settings
from media.errors import exhausted_errno
from media.ingest import MediaContext
from media.job_context import JobContext, JobFailed
from media.jobs import LeaseLost, backoff_s
from media.transcode_job import local_copy

log = logging.getLogger("plyr.media.copyright")

MIN_MATCH_S = 10.0  # a shorter common stretch is no match (a sample, a jingle, noise)

Progress = Callable[[float | None, str | None], Awaitable[None]]


class ScanFailed(RuntimeError):
    """An attempt ended as an `error` row; the job retries it."""


@dataclass(frozen=True)
class ScanOutcome:
    scan_id: int
    status: str                     # clear, flagged or error
    matches: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    track_uri: str | None = None
    audio_missing: bool = False     # no media object of that sha-256 at all: retrying cannot help
    duration_s: float | None = None
    external: ExternalOutcome | None = None


# ffmpeg decodes what it can of a damaged file: a fingerprint of a fraction of the audio is not a
# scan of it, and must not read as clear. Chromaprint's values cover the audio but its last few
# seconds (each value spans 2.7 s), hence the slack.
MIN_COVERAGE = 0.9
COVERAGE_SLACK_S = 5.0


def check_coverage(fingerprinted_s: float, duration_s: float | None) -> None:
    """Raise when the fingerprint covers clearly less than the audio's probed duration."""
    if duration_s and fingerprinted_s < MIN_COVERAGE * duration_s - COVERAGE_SLACK_S:
        raise fingerprint.FingerprintError(
            f"fingerprinted {fingerprinted_s:.1f} s of audio that lasts {duration_s:.1f} s (damaged or truncated file)"
        )


async def _scan_local(
    media: MediaContext, audio: store.Audio, path: Path, *, track_uri: str | None, job_id: int | None,
    attempt: int, started: datetime, progress: Progress | None,
) -> ScanOutcome:  # fmt: skip
    """Our own engine: fingerprint `path`, match, write the row; raises when anything fails."""
    sha256 = audio.sha256
    fp = await fingerprint.fingerprint_file(path, ffmpeg=media.ffmpeg, speeds=fingerprint.QUERY_SPEEDS)
    check_coverage(fp.duration_s, audio.duration_s)
    if progress is not None:
        await progress(0.8, "matching")
    async with media.pool.acquire() as conn, conn.transaction():
        await store.lock_catalog(conn, shared=True)  # a reference added meanwhile: see rescan.py
        tracks, artists, first = await artists_of(conn, sha256)
        track_uri = track_uri or (tracks[0][0] if tracks else None)
        if (d := did_of(track_uri)) is not None:
            artists.add(d)
        fid = await store.own_fingerprint(conn, sha256)
        if fid is None:
            # Keyed by the track it plays as, or by the audio itself before any track does.
            fid = await fingerprint.store_fingerprint(
                conn, track_uri=track_uri, reference_id=None, fp=fp,
                audio_sha256=None if track_uri else sha256,
            )  # fmt: skip
        found = await fingerprint.find_matches(conn, fp, exclude_track_uri=track_uri, min_length_s=MIN_MATCH_S)
        matches = await kept_matches(conn, found, sha256=sha256, fingerprint_id=fid, tracks=tracks,
                                     artists=artists, first=first)  # fmt: skip
        matches += await copy_matches(conn, sha256=sha256, fingerprint_id=fid, duration_s=fp.duration_s,
                                      tracks=tracks, first=first)  # fmt: skip
        await carry_decisions(conn, sha256=sha256, tracks=tracks, matches=matches)
        status = "flagged" if matches else "clear"
        scan_id = await store.record_scan(
            conn, audio=audio, sha256=sha256, track_uri=track_uri, job_id=job_id, attempt=attempt,
            status=status, started_at=started, matches=matches, engine=fp.engine, fingerprint_id=fid,
            duration_s=fp.duration_s,
        )  # fmt: skip
    log.info("copyright scan", extra={"sha256": sha256, "scan": scan_id, "status": status,
                                      "matches": len(matches), "track": track_uri})  # fmt: skip
    return ScanOutcome(scan_id, status, matches, track_uri=track_uri, duration_s=fp.duration_s)


async def _done_by_job(pool: asyncpg.Pool, sha256: str, job_id: int) -> ScanOutcome | None:
    """Our own engine's outcome from an earlier attempt of this job (a retry for the external
    engine only), or None."""
    row = await pool.fetchrow(
        "SELECT id, status, matches, track_uri, duration_s FROM copyright_scans "
        "WHERE sha256 = $1 AND job_id = $2 AND NOT external AND status <> 'error' ORDER BY id DESC LIMIT 1",
        sha256, job_id,
    )  # fmt: skip
    if row is None:
        return None
    return ScanOutcome(int(row["id"]), row["status"], list(row["matches"]), track_uri=row["track_uri"],
                       duration_s=row["duration_s"])  # fmt: skip


async def scan_audio(
    media: MediaContext,
    sha256: str,
    *,
    track_uri: str | None = None,
    job_id: int | None = None,
    attempt: int = 1,
    retry_in_s: float | None = None,
    progress: Progress | None = None,
) -> ScanOutcome:
    """Scan the audio object `sha256` once and write the attempt's row (see the module doc),
    then, when an external recognition service is configured, its row too (recognition.py). A
    retry of a job whose own engine succeeded asks only the external service again.

    Database failures, a lost lease and running out of disk or memory are raised (not the
    audio's fault: no row); everything else that goes wrong is an `error` row."""
    started = datetime.now(UTC)
    pool = media.pool
    audio = await store.audio_object(pool, sha256)
    if audio is None:
        message = f"no stored audio {sha256}"
        scan_id = await store.record_scan(pool, audio=None, sha256=sha256, track_uri=track_uri, job_id=job_id,
                                          attempt=attempt, status="error", started_at=started, error=message)  # fmt: skip
        return ScanOutcome(scan_id, "error", error=message, track_uri=track_uri, audio_missing=True)
    recognizer = recognizer_from_settings(media.settings)
    local: ScanOutcome | None = None
    if recognizer is not None and job_id is not None:
        local = await _done_by_job(pool, sha256, job_id)
    try:
        if progress is not None:
            await progress(0.0, "fingerprinting")
        async with local_copy(media, audio.storage_key) as path:
            if local is None:
                local = await _scan_local(media, audio, path, track_uri=track_uri, job_id=job_id, attempt=attempt,
                                          started=started, progress=progress)  # fmt: skip
            if recognizer is not None:
                if progress is not None:
                    await progress(0.9, "asking " + recognizer.name)
                external = await recognize_audio(media, recognizer, audio, path, track_uri=local.track_uri,
                                                 duration_s=local.duration_s, job_id=job_id, attempt=attempt,
                                                 retry_in_s=retry_in_s)  # fmt: skip
                local = dataclasses.replace(local, external=external)
        return local
    except (LeaseLost, asyncpg.PostgresError, asyncpg.InterfaceError):
        raise
    except Exception as exc:
        if exhausted_errno(exc) is not None or local is not None:
            raise  # a full disk is not the audio's fault: the worker puts the job back
        message = str(exc) or type(exc).__name__
        scan_id = await store.record_scan(pool, audio=audio, sha256=sha256, track_uri=track_uri, job_id=job_id,
                                          attempt=attempt, status="error", started_at=started, error=message,
                                          retry_in_s=retry_in_s)  # fmt: skip
        log.warning("copyright scan failed", extra={"sha256": sha256, "scan": scan_id, "error": message,
                                                    "attempt": attempt})  # fmt: skip
        return ScanOutcome(scan_id, "error", error=message, track_uri=track_uri)


async def run_copyright_scan(ctx: JobContext) -> dict[str, Any]:
    job = ctx.job
    payload = job.payload
    again = job.attempts < job.max_attempts
    outcome = await scan_audio(
        ctx.media,
        payload["sha256"],
        track_uri=payload.get("track_uri"),
        job_id=job.id,
        attempt=int(payload.get("previous_attempts") or 0) + job.attempts,
        retry_in_s=backoff_s(job.attempts) if again else None,
        progress=ctx.progress,
    )
    if outcome.audio_missing:
        raise JobFailed(outcome.error or "no stored audio")
    if outcome.status == "error":
        raise ScanFailed(f"copyright scan {outcome.scan_id} failed: {outcome.error}")
    if (ext := outcome.external) is not None and ext.status == "error":
        raise ScanFailed(f"copyright scan {ext.scan_id} by {ext.engine} failed: {ext.error}")
    result = {"scanId": outcome.scan_id, "status": outcome.status, "matches": len(outcome.matches),
              "trackUri": outcome.track_uri}  # fmt: skip
    if ext is not None:
        result["external"] = {"scanId": ext.scan_id, "engine": ext.engine, "status": ext.status}
    return result
