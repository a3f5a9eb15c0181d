"""Finding where a fingerprint matches the stored ones (references and other tracks).

1. The query's index terms (align.query_terms) are looked up in `audio_fingerprint_index`, in
   batches of LOOKUP_BATCH through `unnest` (one btree probe each); a term found more than
   POSTINGS_CAP times is too common to tell anything apart and is dropped.
2. Hits are grouped per stored fingerprint; the best MAX_CANDIDATES by coarse votes (at least
   MIN_VOTES) are read whole and aligned (align.best_line: speed and offset) and verified by
   bit error rate (align.segments). Up to MAX_LINES alignments per candidate.
Cost grows with the query's length and the hits, never with the catalog's size.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import media.fingerprint.align as align
from core.db import Connection
from media.fingerprint.compute import (
    ENGINE,
    FRAME_S,
    ITEM_SPAN_S,
    Fingerprint,
    FingerprintError,
    values_from_bytes,
)

LOOKUP_BATCH = 4096
POSTINGS_CAP = 1000  # a term in more stored fingerprints than this is a stop word

_LOOKUP = """
SELECT q.hash, i.fingerprint_id, i.position
FROM unnest($1::int4[]) AS q(hash)
CROSS JOIN LATERAL (
    SELECT fingerprint_id, position FROM audio_fingerprint_index x
    WHERE x.hash = q.hash LIMIT $2
) AS i
"""


@dataclass(frozen=True)
class Match:
    """A stretch of the query that is a copy of a stored fingerprint's audio.

    `offset_s`: where it starts in the query; `reference_offset_s`: the same moment in the
    stored audio; `length_s`: its length in the query; `similarity`: 1 - 2 * bit error rate over
    the stretch (1: the same values, 0: unrelated audio); `speed`: stored seconds per query
    second (1.02: the query plays the stored audio 2 % slower)."""

    fingerprint_id: int
    reference_id: int | None
    track_uri: str | None
    offset_s: float
    reference_offset_s: float
    length_s: float
    similarity: float
    speed: float = 1.0


async def _hits(conn: Connection, fp: Fingerprint) -> dict[int, list[tuple[int, int]]]:
    """Stored fingerprint id -> its (query position, stored position) hits."""
    positions = align.query_terms(fp.values)
    keys = list(positions)
    hits: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for start in range(0, len(keys), LOOKUP_BATCH):
        rows = await conn.fetch(_LOOKUP, keys[start : start + LOOKUP_BATCH], POSTINGS_CAP + 1)
        found: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for term, fingerprint_id, position in rows:
            found[term].append((fingerprint_id, position))
        for term, postings in found.items():
            if len(postings) > POSTINGS_CAP:
                continue  # a stop word
            for fingerprint_id, r in postings:
                hits[fingerprint_id].extend((q, r) for q in positions[term])
    return hits


def _min_values(min_length_s: float) -> int:
    """A lower bound of the matching values a segment of `min_length_s` has."""
    return max(1, int((min_length_s - ITEM_SPAN_S) / FRAME_S))


def _length_s(segment: align.Segment, duration_s: float) -> float:
    return min(duration_s - segment.start * FRAME_S, (segment.end - segment.start) * FRAME_S)


async def find_matches(
    conn: Connection, fp: Fingerprint, *, exclude_track_uri: str | None = None, min_length_s: float = 10.0
) -> list[Match]:
    """Where `fp` holds copies of stored audio (catalog references and other tracks) of at least
    `min_length_s`, by query offset. The fingerprint of `exclude_track_uri` (the query's own
    track, when stored) is left out."""
    if fp.engine != ENGINE:
        raise FingerprintError(f"cannot match a {fp.engine} fingerprint against {ENGINE} ones")
    if not fp.values:
        return []
    hits = await _hits(conn, fp)
    if exclude_track_uri is not None:
        own = await conn.fetch("SELECT id FROM audio_fingerprints WHERE track_uri = $1", exclude_track_uri)
        for row in own:
            hits.pop(row["id"], None)
    scored = sorted(((align.coarse_score(h), fid) for fid, h in hits.items()), reverse=True)
    candidates = [fid for score, fid in scored[: align.MAX_CANDIDATES] if score >= align.MIN_VOTES]
    if not candidates:
        return []
    rows = await conn.fetch(
        """SELECT id, track_uri, reference_id, fingerprint FROM audio_fingerprints
           WHERE id = ANY($1::bigint[]) AND engine = $2""",
        candidates, fp.engine,
    )  # fmt: skip
    min_values = _min_values(min_length_s)
    matches: list[Match] = []
    for row in rows:
        reference = values_from_bytes(row["fingerprint"])
        remaining = hits[row["id"]]
        found: list[align.Segment] = []
        for _ in range(align.MAX_LINES):
            line = align.best_line(remaining)
            if line is None:
                break
            for segment in align.segments(fp.values, reference, line, min_values):
                if not any(s.q_start <= segment.q_end and segment.q_start <= s.q_end for s in found):
                    found.append(segment)
            remaining = align.without_line(remaining, line)
            if align.coarse_score(remaining) < align.MIN_VOTES:
                break
        matches.extend(
            Match(
                fingerprint_id=row["id"],
                reference_id=row["reference_id"],
                track_uri=row["track_uri"],
                offset_s=round(s.start * FRAME_S, 3),
                reference_offset_s=round(max(0.0, s.r_start) * FRAME_S, 3),
                length_s=round(_length_s(s, fp.duration_s), 3),
                similarity=round(s.similarity, 4),
                speed=round(s.speed, 4),
            )
            for s in found
            if _length_s(s, fp.duration_s) >= min_length_s
        )
    matches.sort(key=lambda m: (m.offset_s, -m.length_s, m.fingerprint_id))
    return matches
