"""Writing fingerprints, their index terms and the reference catalog (the one writer of
`audio_fingerprints`, `audio_fingerprint_index` and `copyright_references`)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

from core.db import Connection
from media.fingerprint.align import signed, terms
from media.fingerprint.compute import Fingerprint, FingerprintError, fingerprint_file

_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$")
MAX_TEXT = 500


async def _lock(conn: Connection, key: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "plyr.fingerprint:" + key)


async def _delete_fingerprints(conn: Connection, ids: list[int]) -> None:
    if ids:
        await conn.execute("DELETE FROM audio_fingerprint_index WHERE fingerprint_id = ANY($1::bigint[])", ids)
        await conn.execute("DELETE FROM audio_fingerprints WHERE id = ANY($1::bigint[])", ids)


async def store_fingerprint(
    conn: Connection, *, track_uri: str | None, reference_id: int | None, fp: Fingerprint,
    audio_sha256: str | None = None,
) -> int:  # fmt: skip
    """Store `fp` as the fingerprint of a track, of a catalog reference, or of a stored audio
    object no track plays yet (exactly one of the three), with its index terms; returns its id.
    It replaces the one stored before for the same subject (a track's audio can change), in one
    transaction."""
    subjects = [(name, value) for name, value in
                (("track_uri", track_uri), ("reference_id", reference_id), ("audio_sha256", audio_sha256))
                if value is not None]  # fmt: skip
    if len(subjects) != 1:
        raise ValueError("a fingerprint belongs to exactly one of a track, a reference and an audio object")
    column, key = subjects[0]
    async with conn.transaction():
        await _lock(conn, f"{column}:{key}")
        old = await conn.fetch(f"SELECT id FROM audio_fingerprints WHERE {column} = $1", key)
        await _delete_fingerprints(conn, [row["id"] for row in old])
        fingerprint_id: int = await conn.fetchval(
            """INSERT INTO audio_fingerprints
                   (track_uri, reference_id, audio_sha256, engine, duration_s, value_count, fingerprint)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
            track_uri, reference_id, audio_sha256, fp.engine, fp.duration_s, len(fp.values), fp.to_bytes(),
        )  # fmt: skip
        rows = [(fingerprint_id, signed(term), position) for term, position in terms(fp.values)]
        if rows:
            await conn.copy_records_to_table(
                "audio_fingerprint_index", records=rows, columns=["fingerprint_id", "hash", "position"]
            )
    return fingerprint_id


async def forget_track(conn: Connection, track_uri: str) -> bool:
    """Delete a track's fingerprint and its index terms (the track is gone); True if it had one."""
    async with conn.transaction():
        await _lock(conn, f"track_uri:{track_uri}")
        rows = await conn.fetch("SELECT id FROM audio_fingerprints WHERE track_uri = $1", track_uri)
        await _delete_fingerprints(conn, [row["id"] for row in rows])
    return bool(rows)


def normalize_isrc(isrc: str | None) -> str | None:
    """`us-rc1-76-07839` -> `USRC17607839`; FingerprintError when it is not an ISRC."""
    if isrc is None or not isrc.strip():
        return None
    code = re.sub(r"[\s-]", "", isrc).upper()
    if not _ISRC.match(code):
        raise FingerprintError(f"not an ISRC: {isrc!r} (two letters, three letters or digits, seven digits)")
    return code


def _text(name: str, value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_TEXT:
        raise FingerprintError(f"the {name} must be 1 to {MAX_TEXT} characters")
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def add_reference(
    conn: Connection, path: Path, *, artist: str, title: str, isrc: str | None, fp: Fingerprint | None = None
) -> int:
    """Add the audio file `path` to the reference catalog with its metadata and fingerprint
    (`fp` when the caller already computed it); returns the reference's id. The same file (by
    sha-256) added again returns the existing reference unchanged. Raises FingerprintError for
    bad metadata or audio that cannot be fingerprinted (including audio too short to have a
    fingerprint)."""
    path = Path(path)
    artist, title, isrc = _text("artist", artist), _text("title", title), normalize_isrc(isrc)
    if fp is None:
        fp = await fingerprint_file(path)  # first: it says clearly when the file is missing or not audio
    if not fp.values:
        raise FingerprintError(f"{path.name} is too short to fingerprint ({fp.duration_s:.1f} s)")
    try:
        sha = await asyncio.to_thread(_sha256, path)
    except OSError as exc:
        raise FingerprintError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    async with conn.transaction():
        await _lock(conn, f"sha256:{sha}")
        existing = await conn.fetchval("SELECT id FROM copyright_references WHERE sha256 = $1", sha)
        if existing is not None:
            return int(existing)
        reference_id: int = await conn.fetchval(
            """INSERT INTO copyright_references (artist, title, isrc, sha256, duration_s)
               VALUES ($1, $2, $3, $4, $5) RETURNING id""",
            artist, title, isrc, sha, fp.duration_s,
        )  # fmt: skip
        await store_fingerprint(conn, track_uri=None, reference_id=reference_id, fp=fp)
    return reference_id


async def remove_reference(conn: Connection, reference_id: int) -> bool:
    """Delete a catalog reference with its fingerprint and index terms; True if it existed.
    (A table that refers to the reference, such as scan results, may refuse the delete.)"""
    async with conn.transaction():
        await _lock(conn, f"reference_id:{reference_id}")
        rows = await conn.fetch("SELECT id FROM audio_fingerprints WHERE reference_id = $1", reference_id)
        await _delete_fingerprints(conn, [row["id"] for row in rows])
        deleted = await conn.execute("DELETE FROM copyright_references WHERE id = $1", reference_id)
    return deleted.endswith(" 1")
