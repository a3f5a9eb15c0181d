"""Rescans when the catalog grows: the audio we already scanned that a new reference is found in.

Not a rescan of everything: the new reference's fingerprint (with its speed variants) is the
query, looked up in the index of our audio's fingerprints only (`find_matches(stored="tracks")`,
the reverse direction of a scan); each audio it is found in, and whose newest scan neither
started after the reference existed nor holds a match of it already, is scanned again the
ordinary way (scan.scan_audio: its own fingerprint against everything, allow-list and earlier
decisions applied), which writes the new row, `flagged` where it now matches.

The race with scans running meanwhile is closed by the catalog lock (store.lock_catalog): the
reference is added holding it exclusive, a scan matches holding it shared, so a scan either
sees the reference or committed its fingerprint before the reference, and the reverse lookup,
which runs after the reference's commit, sees that fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.db import Connection
from media import fingerprint
from media.copyright import store
from media.copyright.scan import MIN_MATCH_S, ScanOutcome, scan_audio
from media.ingest import MediaContext
from media.jobs import backoff_s

REVERSE_MAX_CANDIDATES = 2000  # audio a new reference can be found in by one lookup


@dataclass(frozen=True)
class Found:
    """Audio a new reference was found in (by the reverse lookup), before its rescan."""

    sha256: str
    reference_id: int
    offset_s: float  # where, in that audio
    length_s: float


async def _audio_of(conn: Connection, fingerprint_ids: list[int]) -> dict[int, str]:
    """fingerprint id -> the audio object it is the fingerprint of."""
    out = await store.audio_of_fingerprints(conn, fingerprint_ids)
    rows = await conn.fetch(
        "SELECT id, coalesce(audio_sha256, copyright_track_audio(track_uri)) AS sha256 FROM audio_fingerprints "
        "WHERE id = ANY($1::bigint[]) AND reference_id IS NULL",
        [fid for fid in fingerprint_ids if fid not in out],
    )
    out.update({int(r["id"]): r["sha256"] for r in rows if r["sha256"] is not None})
    return out


async def audio_with_reference(conn: Connection, reference_id: int, fp: fingerprint.Fingerprint) -> list[Found]:
    """The audio we hold whose scans predate reference `reference_id` (fingerprint `fp`, with
    its speed variants for copies resampled) and which holds it: the audio to scan again."""
    found = await fingerprint.find_matches(
        conn, fp, stored="tracks", min_length_s=MIN_MATCH_S, max_candidates=REVERSE_MAX_CANDIDATES
    )
    audio = await _audio_of(conn, sorted({m.fingerprint_id for m in found}))
    shas = sorted(set(audio.values()))
    stale = {
        r["sha256"]
        for r in await conn.fetch(
            """SELECT s.sha256 FROM unnest($1::text[]) AS a(sha)
               CROSS JOIN LATERAL (
                   SELECT sha256, created_at, matches FROM copyright_scans
                   WHERE sha256 = a.sha AND NOT external AND status <> 'error' ORDER BY id DESC LIMIT 1
               ) s
               WHERE s.created_at < (SELECT created_at FROM copyright_references WHERE id = $2)
                 AND NOT s.matches @> jsonb_build_array(jsonb_build_object('reference_id', $2::bigint))""",
            shas, reference_id,
        )
    }  # fmt: skip
    out: dict[str, Found] = {}
    for m in found:
        sha = audio.get(m.fingerprint_id)
        if sha is not None and sha in stale and sha not in out:
            # m is in the reference's time: the reference starts in that audio at reference_offset_s
            out[sha] = Found(sha, reference_id, m.reference_offset_s, m.length_s * m.speed)
    return sorted(out.values(), key=lambda f: f.sha256)


async def rescan(media: MediaContext, sha256: str) -> ScanOutcome:
    """Scan one audio again in this process, as `plyr moderation scan` does; a failed attempt is
    queued for the media workers to retry."""
    attempt = await store.attempts_so_far(media.pool, sha256) + 1
    outcome = await scan_audio(media, sha256, attempt=attempt, retry_in_s=backoff_s(1))
    if outcome.status == "error" and not outcome.audio_missing:
        await store.request_scan(media.pool, sha256, previous_attempts=attempt, delay_s=backoff_s(1), force=True)
    return outcome


async def add_and_rescan(
    media: MediaContext,
    conn: Connection,
    path: Path,
    *,
    artist: str,
    title: str,
    isrc: str | None,
) -> tuple[int, list[tuple[Found, ScanOutcome]]]:
    """Add one recording to the catalog (fingerprinted outside the transaction, added under the
    catalog lock) and scan again the audio it is found in; (reference id, the rescans)."""
    fp = await fingerprint.fingerprint_file(path, ffmpeg=media.ffmpeg, speeds=fingerprint.QUERY_SPEEDS)
    async with conn.transaction():
        await store.lock_catalog(conn, shared=False)
        reference_id = await fingerprint.add_reference(conn, path, artist=artist, title=title, isrc=isrc, fp=fp)
    candidates = await audio_with_reference(conn, reference_id, fp)
    done = [(found, await rescan(media, found.sha256)) for found in candidates]
    return reference_id, done
