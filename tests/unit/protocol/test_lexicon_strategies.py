"""The lexicon-derived generators of tests/support/lexicon_strategies.py (issue #10).

They must reach every constraint of every record lexicon (a new constraint without a generator
fails here), generate only records the lexicons accept, break exactly the one constraint they
claim, and reach the extremes (the exact maximum of each limit).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from core.lexicons import load_lexicons
from tests.support.lexicon_strategies import (
    INT64_MAX,
    ITEM,
    Broken,
    LexiconStrategies,
    Target,
    TextLimits,
    constraint_keywords,
    format_values,
    grapheme_len,
    utf8_len,
    values_at,
)

# Records at their size limits make hypothesis warn about long reprs; that size is the point.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

LEX = LexiconStrategies.load()
LEXICONS = load_lexicons()
RECORD_TYPES = LEX.record_types()
EXAMPLES = int(os.environ.get("PLYR_LEXICON_EXAMPLES", "40"))

GENERATOR_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Lexicon keywords that constrain a value, and the target kind that breaks each. The coverage
# test fails for any keyword not listed here: a new kind of constraint needs a generator.
KEYWORD_KINDS: dict[str, str] = {
    "minLength": "minLength",
    "maxLength": "maxLength",
    "minGraphemes": "minGraphemes",
    "maxGraphemes": "maxGraphemes",
    "format": "format",
    "enum": "enum",
    "const": "const",
    "minimum": "minimum",
    "maximum": "maximum",
    "accept": "accept",
    "maxSize": "maxSize",
    "closed": "closed",
    "union": "union-type",
    "key": "rkey",
    "required": "required",
    "property": "type",
}


def _schema_at(nsid: str, steps: tuple[str, ...]) -> dict[str, Any]:
    """The schema node `steps` lead to (refs followed), to tell trivial limits from real ones."""
    node, doc = LEX.docs[nsid]["defs"]["main"]["record"], nsid
    for step in (*steps, None):
        while node["type"] == "ref":
            node, doc, _ = LEX.resolve(node["ref"], doc)
        if step is None:
            return node
        if step == ITEM:
            node = node["items"]
        elif step.startswith("<"):
            node, doc, _ = LEX.resolve(step[1:-1], doc)
        else:
            node = node["properties"][step]
    raise AssertionError("unreachable")


@pytest.mark.parametrize("nsid", RECORD_TYPES)
def test_every_constraint_of_the_lexicon_has_a_target(nsid: str) -> None:
    targets = {(t.steps, t.kind) for t in LEX.targets(nsid)}
    missing = []
    for steps, keyword in constraint_keywords(LEX.docs, nsid):
        if keyword not in KEYWORD_KINDS:
            missing.append(
                f"{'/'.join(steps)}: no generator breaks the lexicon keyword {keyword!r}"
            )
            continue
        kind = KEYWORD_KINDS[keyword]
        node = _schema_at(nsid, steps) if keyword != "key" else {}
        trivial = (keyword == "minLength" and node.get(keyword) == 0) or (
            # maxGraphemes at or above maxLength can never be the limit that is hit.
            keyword == "maxGraphemes" and node.get("maxLength", INT64_MAX) <= node["maxGraphemes"]
        )
        if not trivial and (steps, kind) not in targets:
            missing.append(f"{'/'.join(steps)}: {keyword} has no target")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("nsid", RECORD_TYPES)
@GENERATOR_SETTINGS
@given(data=st.data())
def test_valid_records_pass_the_lexicon(nsid: str, data: st.DataObject) -> None:
    record, rkey = data.draw(LEX.valid(nsid))
    assert LEXICONS.validate_record(nsid, record, rkey=rkey) == []


ALL_TARGETS = [(nsid, target) for nsid in RECORD_TYPES for target in LEX.targets(nsid)]


@pytest.mark.parametrize(("nsid", "target"), ALL_TARGETS, ids=lambda x: str(x))
@settings(GENERATOR_SETTINGS, max_examples=max(3, EXAMPLES // 8))
@given(data=st.data())
def test_broken_records_fail_at_the_named_field_only(
    nsid: str, target: Target, data: st.DataObject
) -> None:
    broken: Broken = data.draw(LEX.broken(nsid, target))
    problems = LEXICONS.validate_record(nsid, broken.record, rkey=broken.rkey)
    assert problems, f"the lexicon accepts {broken.record!r} / {broken.rkey!r}"
    stray = [p for p in problems if not p.startswith(broken.path + ":")]
    assert not stray, f"expected only {broken.path} problems, got {problems}"


class _Found(Exception):
    """Raised to stop the search at the first hit (hypothesis' find() would also shrink it)."""


def _search(strategy: st.SearchStrategy[Any], hit: Callable[[Any], bool], what: str) -> None:
    @settings(
        max_examples=2000,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def look(value: Any) -> None:
        if hit(value):
            raise _Found

    try:
        look()
    except _Found:
        return
    pytest.fail(f"no generated value reaches {what}")


def _reaches(nsid: str, steps: tuple[str, ...], hit: Callable[[Any], bool]) -> None:
    def found(pair: tuple[dict[str, Any], str]) -> bool:
        return any(hit(v) for v in values_at(pair[0], steps))

    _search(LEX.valid(nsid), found, "/".join(steps))


def _extreme_targets() -> list[tuple[str, Target]]:
    kinds = {"maxLength", "maxGraphemes", "int64-max", "maximum", "maxSize"}
    return [(n, t) for n in RECORD_TYPES for t in LEX.targets(n) if t.kind in kinds]


@pytest.mark.parametrize(("nsid", "target"), _extreme_targets(), ids=lambda x: str(x))
def test_valid_records_reach_each_upper_limit_exactly(nsid: str, target: Target) -> None:
    """The generators hit every maximum itself, not just values below it."""
    node = _schema_at(nsid, target.steps)
    if target.kind == "maxLength" and node["type"] == "array":
        _reaches(nsid, target.steps, lambda v: len(v) == node["maxLength"])
    elif target.kind == "maxLength":
        limits = TextLimits.of(node)
        _reaches(nsid, target.steps, lambda v: utf8_len(v) == limits.max_bytes)
    elif target.kind == "maxGraphemes":
        _reaches(nsid, target.steps, lambda v: grapheme_len(v) == node["maxGraphemes"])
    elif target.kind == "maxSize":
        _reaches(nsid, target.steps, lambda v: v.get("size") == node["maxSize"])
    else:
        high = node.get("maximum", INT64_MAX)
        _reaches(nsid, target.steps, lambda v: v == high)


@pytest.mark.parametrize(
    ("fmt", "hit"),
    [
        ("datetime", lambda v: v.startswith("0000-")),
        ("datetime", lambda v: v.startswith("9999-12-31") and v.endswith("-23:59")),
        ("datetime", lambda v: len(v.partition(".")[2]) > 10),
        (
            "at-uri",
            lambda v: len(v) == 2884,
        ),  # at://, a 2048-char DID, 317-char NSID, 512-char rkey
        ("uri", lambda v: utf8_len(v) == 8192),
        ("did", lambda v: v.startswith("did:web:")),
        ("did", lambda v: not v.startswith(("did:web:", "did:plc:"))),
    ],
)
def test_format_generators_reach_their_extremes(fmt: str, hit: Callable[[str], bool]) -> None:
    _search(format_values(fmt), hit, f"the {fmt} extreme")
