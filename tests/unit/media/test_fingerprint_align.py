"""Matching arithmetic on made-up sub-fingerprints: index terms, the (speed, offset) vote, and
the bit-error verification of segments."""

from __future__ import annotations

import random
from array import array

import pytest

from media.fingerprint import align
from media.fingerprint.align import (
    Line,
    best_line,
    coarse_score,
    is_sampled,
    query_terms,
    segments,
    signed,
    terms,
)


def random_values(n: int, seed: int) -> array[int]:
    r = random.Random(seed)
    return array("I", (r.getrandbits(32) for _ in range(n)))


def flip_bits(values: array[int], rate: float, seed: int) -> array[int]:
    r = random.Random(seed)
    out = array("I", values)
    for i in range(len(out)):
        for b in range(32):
            if r.random() < rate:
                out[i] ^= 1 << b
    return out


def test_terms_skip_runs_silence_and_keep_a_content_sample() -> None:
    values = random_values(20000, 1)
    kept = terms(values)
    share = 1 / 2**align.SAMPLE_BITS
    assert share * 0.9 < len(kept) / len(values) < share * 1.1
    assert all(is_sampled(t) and values[p] & align.TERM_MASK == t for t, p in kept)
    sampled = next(v for v in values if is_sampled(v & align.TERM_MASK))
    term = sampled & align.TERM_MASK
    flipped = sampled ^ (1 << 4)  # a bit outside the mask: the same term
    silence = next(iter(align.SILENCE_VALUES))
    run = array("I", [sampled, flipped, sampled] + [silence] * 3 + [sampled])
    assert terms(run) == [(term, 0), (term, 6)]  # a run counts once; silence never
    assert query_terms(run) == {signed(term): [0, 6]}
    assert signed(0xFFFFFFFF) == -1 and signed(0x7FFFFFFF) == 0x7FFFFFFF


def test_best_line_finds_speed_and_offset_among_noise() -> None:
    r = random.Random(2)
    true = [(q, round(1.02 * q + 300)) for q in range(0, 1500, 9)]
    noise = [(r.randrange(2000), r.randrange(2000)) for _ in range(200)]
    line = best_line(true + noise)
    assert line is not None
    assert line.speed == pytest.approx(1.02, abs=0.001)
    assert line.at(1000) == pytest.approx(1320, abs=1.5)
    assert best_line(noise[:2]) is None
    assert coarse_score(true) >= len(true) // 2
    rest = align.without_line(true + noise, line)
    assert len(rest) <= len(noise)


def test_segments_give_offsets_length_and_similarity() -> None:
    reference = random_values(1500, 3)
    copy = flip_bits(reference[200:900], 0.02, 4)  # 700 values, 2 % of bits flipped
    query = random_values(300, 5) + copy + random_values(400, 6)
    line = Line(1.0, 200 - 300, 10)
    [segment] = segments(query, reference, line, min_values=50)
    assert abs(segment.q_start - 300) <= 1 and abs(segment.q_end - 999) <= 1
    # Edges found by errors move to where a real copy's audio begins and ends (align.EDGE_*).
    assert segment.start == segment.q_start + align.EDGE_LEAD and segment.end == segment.q_end + align.EDGE_TAIL
    assert segment.r_start == pytest.approx(segment.start - 100)
    assert segment.similarity == pytest.approx(0.96, abs=0.01)
    assert segments(query, reference, line, min_values=800) == []  # shorter than asked


def test_unrelated_values_never_verify_whatever_the_line() -> None:
    reference = random_values(2000, 7)
    query = random_values(2000, 8)
    for speed in (0.97, 1.0, 1.03):
        for intercept in (-500, 0, 37, 900):
            assert segments(query, reference, Line(speed, intercept, 3), min_values=10) == []


def test_a_gap_inside_a_match_is_bridged() -> None:
    reference = random_values(1000, 9)
    query = array("I", reference)
    for i in range(400, 415):  # ~2 s of something else on top (a voice-over)
        query[i] ^= 0x5A5A5A5A
    [segment] = segments(query, reference, Line(1.0, 0.0, 10), min_values=50)
    assert segment.q_start == 0 and segment.q_end == 999
    assert segment.start == 0 and segment.end == 999 + align.SPAN  # the overlap's own ends: exact
