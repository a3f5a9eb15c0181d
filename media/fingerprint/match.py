"""Finding where a fingerprint matches the stored ones (references and other tracks).

1. The query's index terms (align.query_terms) are looked up in `audio_fingerprint_index`, in
   batches of LOOKUP_BATCH through `unnest` (one btree probe each); a term found more than
   POSTINGS_CAP times is too common to tell anything apart and is dropped.
2. Hits are grouped per stored fingerprint; the best MAX_CANDIDATES by coarse votes (at least
   MIN_VOTES) are read whole and aligned (align.best_line: speed and offset) and verified by
   bit error rate (align.segments). Up to MAX_LINES alignments per candidate.
3. A query's speed variants (a copy sped up with its pitch, compute.QUERY_SPEEDS) go through the
   same lookup with fewer terms each; per stored fingerprint the best segment wins where
   versions overlap, in the query's own seconds.
Cost grows with the query's length and the hits, never with the catalog's size.
"""

from __future__ import annotations

from array import array
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
    second (1.02: the query plays the stored audio 2 % faster)."""

    fingerprint_id: int
    reference_id: int | None
    track_uri: str | None
    offset_s: float
    reference_offset_s: float
    length_s: float
    similarity: float
    speed: float = 1.0


# A query's speed variants (compute.Variant) are looked up with an eighth of the terms (the
# index's half, sampled again): a copy that a variant realigns hits about as often as a plain
# copy (measured: 86 hits a minute at half the terms, so about 21 at an eighth, 3-4 in a 10 s
# stretch: enough from about 15 s on), and the four variants cost one plain lookup together
# (the lookups are btree probes, their cost is their number: docs/BENCHMARKS.md).
VARIANT_SAMPLE_BITS = align.SAMPLE_BITS + 2

Hits = dict[tuple[int, int], list[tuple[int, int]]]


def _versions(fp: Fingerprint) -> list[tuple[float, array[int], int]]:
    """(speed, values, sample bits) of what is looked up: the plain values, then each variant."""
    return [(1.0, fp.values, align.SAMPLE_BITS)] + [
        (v.speed, v.values, VARIANT_SAMPLE_BITS) for v in fp.variants if v.values
    ]


async def _hits(conn: Connection, versions: list[tuple[float, array[int], int]]) -> Hits:
    """(stored fingerprint id, version) -> its (query position, stored position) hits; every
    version's terms go through one lookup."""
    positions: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for k, (_, values, bits) in enumerate(versions):
        for term, q in align.terms(values, bits):
            positions[term - (1 << 32) if term >= 1 << 31 else term].append((k, q))  # align.signed
    keys = sorted(positions)  # btree probes in key order
    hits: Hits = defaultdict(list)
    for start in range(0, len(keys), LOOKUP_BATCH):
        rows = await conn.fetch(_LOOKUP, keys[start : start + LOOKUP_BATCH], POSTINGS_CAP + 1)
        found: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for term, fingerprint_id, position in rows:
            found[term].append((fingerprint_id, position))
        for term, postings in found.items():
            if len(postings) > POSTINGS_CAP:
                continue  # a stop word
            for fingerprint_id, r in postings:
                for k, q in positions[term]:
                    hits[(fingerprint_id, k)].append((q, r))
    return hits


def _min_values(min_length_s: float) -> int:
    """A lower bound of the matching values a segment of `min_length_s` has."""
    return max(1, int((min_length_s - ITEM_SPAN_S) / FRAME_S))


@dataclass(frozen=True)
class _Found:
    """A verified segment in the query's own seconds."""

    offset_s: float
    reference_offset_s: float
    length_s: float
    bit_error_rate: float
    speed: float

    @property
    def end_s(self) -> float:
        return self.offset_s + self.length_s


def _in_query(segment: align.Segment, version_speed: float, duration_s: float) -> _Found:
    """A segment of a version (values of the audio played `version_speed` times as fast) in
    the query's seconds: its value i starts at i * FRAME_S * version_speed."""
    offset = segment.start * FRAME_S * version_speed
    length = min(duration_s - offset, (segment.end - segment.start) * FRAME_S * version_speed)
    return _Found(offset, max(0.0, segment.r_start) * FRAME_S, length, segment.bit_error_rate,
                  segment.speed / version_speed)  # fmt: skip


def _segments(values: array[int], reference: array[int], hits: list[tuple[int, int]], min_values: int) -> list[align.Segment]:
    """Up to MAX_LINES alignments of one version with one stored fingerprint, verified."""
    found: list[align.Segment] = []
    remaining = hits
    for _ in range(align.MAX_LINES):
        line = align.best_line(remaining)
        if line is None:
            break
        for segment in align.segments(values, reference, line, min_values):
            if not any(s.q_start <= segment.q_end and segment.q_start <= s.q_end for s in found):
                found.append(segment)
        remaining = align.without_line(remaining, line)
        if align.coarse_score(remaining) < align.MIN_VOTES:
            break
    return found


def _best_of(found: list[_Found]) -> list[_Found]:
    """Of segments found through several versions, the best where they overlap (the most
    matching audio: length times similarity)."""
    kept: list[_Found] = []
    for f in sorted(found, key=lambda f: -f.length_s * (1 - 2 * f.bit_error_rate)):
        if not any(k.offset_s < f.end_s and f.offset_s < k.end_s for k in kept):
            kept.append(f)
    return kept


async def find_matches(
    conn: Connection,
    fp: Fingerprint,
    *,
    exclude_track_uri: str | None = None,
    min_length_s: float = 10.0,
    stored: str = "all",
    max_candidates: int = align.MAX_CANDIDATES,
) -> list[Match]:
    """Where `fp` holds copies of stored audio (catalog references and other tracks) of at least
    `min_length_s`, by query offset. The fingerprint of `exclude_track_uri` (the query's own
    track, when stored) is left out. `fp`'s speed variants are looked up too (a copy sped up
    with its pitch): offsets, lengths and speeds are given in the query's own seconds.
    `stored="tracks"`: only fingerprints of our audio, not catalog references (a new
    reference looking for the tracks that copy it)."""
    if fp.engine != ENGINE:
        raise FingerprintError(f"cannot match a {fp.engine} fingerprint against {ENGINE} ones")
    if not fp.values:
        return []
    versions = _versions(fp)
    hits = await _hits(conn, versions)
    excluded: set[int] = set()
    if exclude_track_uri is not None:
        own = await conn.fetch("SELECT id FROM audio_fingerprints WHERE track_uri = $1", exclude_track_uri)
        excluded = {row["id"] for row in own}
    scores: dict[int, int] = defaultdict(int)
    for (fid, _), h in hits.items():
        if len(h) >= align.MIN_VOTES and fid not in excluded:  # most are one chance hit
            scores[fid] = max(scores[fid], align.coarse_score(h))
    ranked = [fid for fid, score in sorted(scores.items(), key=lambda x: (-x[1], x[0])) if score >= align.MIN_VOTES]
    if stored == "tracks" and ranked:
        ours = await conn.fetch(
            "SELECT id FROM audio_fingerprints WHERE id = ANY($1::bigint[]) AND reference_id IS NULL", ranked
        )
        keep = {row["id"] for row in ours}
        ranked = [fid for fid in ranked if fid in keep]
    candidates = ranked[:max_candidates]
    if not candidates:
        return []
    rows = await conn.fetch(
        """SELECT id, track_uri, reference_id, fingerprint FROM audio_fingerprints
           WHERE id = ANY($1::bigint[]) AND engine = $2""",
        candidates, fp.engine,
    )  # fmt: skip
    matches: list[Match] = []
    for row in rows:
        reference = values_from_bytes(row["fingerprint"])
        found: list[_Found] = []
        for k, (speed, values, _) in enumerate(versions):
            got = hits.get((row["id"], k))
            if not got or align.coarse_score(got) < align.MIN_VOTES:
                continue
            for segment in _segments(values, reference, got, _min_values(min_length_s / speed)):
                found.append(_in_query(segment, speed, fp.duration_s))
        matches.extend(
            Match(
                fingerprint_id=row["id"],
                reference_id=row["reference_id"],
                track_uri=row["track_uri"],
                offset_s=round(f.offset_s, 3),
                reference_offset_s=round(f.reference_offset_s, 3),
                length_s=round(f.length_s, 3),
                similarity=round(max(0.0, min(1.0, 1.0 - 2.0 * f.bit_error_rate)), 4),
                speed=round(f.speed, 4),
            )
            for f in _best_of(found)
            if f.length_s >= min_length_s
        )
    matches.sort(key=lambda m: (m.offset_s, -m.length_s, m.fingerprint_id))
    return matches
