"""appview/labels.py without a database: negotiation, hidden values, finishing a shared result
(never changed), and the SQL Moderation writes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appview.errors import XRPCError
from appview.labels import (
    DEFAULT_HIDDEN_LABELS,
    Moderation,
    RequestLabels,
    finish,
    finish_view,
    hidden_labels,
    is_hidden,
    negotiate,
)
from core.settings import LabelSettings
from protocol.labels import AcceptedLabeler

A, B, C = "did:web:a.test", "did:web:b.test", "did:web:c.test"
SETTINGS = LabelSettings(labelers=(A, B), moderation_labelers=(A,), default_labelers=())


def label(src: str, val: str, uri: str = "at://did:web:x.test/fm.plyr.track/1") -> dict[str, Any]:
    return {"ver": 1, "src": src, "uri": uri, "val": val, "cts": "2026-01-01T00:00:00Z"}


def test_negotiation() -> None:
    assert negotiate([], SETTINGS).applied == (AcceptedLabeler(A),)
    assert negotiate([], LabelSettings(labelers=(A, B), default_labelers=(B,))).header == B
    assert negotiate([""], SETTINGS).applied == ()
    assert negotiate([f"{C}, {B};redact", A], SETTINGS).header == f"{B};redact, {A}"
    assert negotiate([f"{B};redact"], SETTINGS).redact == {B}
    for bad in (["x"], [f"{A},,{B}"], [f"{A};BAD"]):
        with pytest.raises(XRPCError) as exc:
            negotiate(bad, SETTINGS)
        assert (exc.value.status, exc.value.error) == (400, "InvalidRequest")


def test_hidden_labels() -> None:
    assert hidden_labels(None) == DEFAULT_HIDDEN_LABELS
    assert {"porn", "sexual", "nudity", "graphic-media"} <= DEFAULT_HIDDEN_LABELS
    assert hidden_labels("[]") == frozenset()
    assert hidden_labels('["rude", "!warn", 3]') == {"rude"}
    assert hidden_labels("null") == hidden_labels("{}") == hidden_labels("{") == DEFAULT_HIDDEN_LABELS


def test_finish_keeps_the_request_labelers_and_never_changes_the_shared_result() -> None:
    plain = {"uri": "at://p", "labels": [], "author": {"did": C, "labels": []}}
    rude = {"uri": "at://r", "labels": [], "_labels": [label(B, "rude"), label(C, "far")],
            "author": {"did": C, "labels": [], "_labels": [label(A, "spam", C)]}}
    down = {"uri": "at://d", "labels": [], "_labels": [label(B, "!takedown")], "author": {"did": C, "labels": []}}
    shared = {"tracks": [plain, rude, down], "cursor": "x"}
    before = copy.deepcopy(shared)
    req = RequestLabels((AcceptedLabeler(B),))
    out = finish(shared, req, frozenset())
    assert out["tracks"][0] is plain  # nothing to change: the shared view itself
    assert [lb["val"] for lb in out["tracks"][1]["labels"]] == ["rude"]
    assert out["tracks"][1]["author"] == {"did": C, "labels": []}
    assert all("_labels" not in v and "_labels" not in v["author"] for v in out["tracks"])
    assert list(out["tracks"][1]) == ["uri", "labels", "author"]  # the shared view's order
    assert out["cursor"] == "x" and len(out["tracks"]) == 3
    assert [v["uri"] for v in finish(shared, req, frozenset({"rude"}))["tracks"]] == ["at://p", "at://d"]
    redacting = RequestLabels((AcceptedLabeler(B, redact=True),))
    assert [v["uri"] for v in finish(shared, redacting, frozenset())["tracks"]] == ["at://p", "at://r"]
    with pytest.raises(XRPCError):
        finish({"track": down}, redacting, frozenset())
    liked = finish(shared, req, frozenset(), liked={"at://r": "at://like"})
    assert [v["viewer"] for v in liked["tracks"]] == [{}, {"like": "at://like"}, {}]
    assert shared == before


_LABELS = st.lists(st.sampled_from([label(A, "porn"), label(B, "!takedown"), label(B, "rude"),
                                     label(C, "spam"), label(A, "!warn")]), max_size=2, unique_by=id)


@st.composite
def _views(draw: st.DrawFn) -> dict[str, Any]:
    """Views with labels anywhere or nowhere (most of them): self labels, labelers' labels,
    on the view and on its person, under either person key, or no person at all."""
    view: dict[str, Any] = {"uri": f"at://{draw(st.integers(0, 5))}", "labels": draw(_LABELS)}
    if draw(st.booleans()):
        view["_labels"] = draw(_LABELS)
    person_key = draw(st.sampled_from(["author", "actor", None]))
    if person_key is not None:
        view[person_key] = {"did": C, "labels": draw(_LABELS)}
        if draw(st.booleans()):
            view[person_key]["_labels"] = draw(_LABELS)
    return view


@given(st.lists(st.one_of(_views(), st.just({"uri": "at://bare", "labels": [], "author": {"did": C, "labels": []}})),
                max_size=6),
       st.sampled_from([RequestLabels((AcceptedLabeler(B),)), RequestLabels((AcceptedLabeler(B, redact=True), AcceptedLabeler(A))),
                        RequestLabels(())]),
       st.sampled_from([frozenset(), DEFAULT_HIDDEN_LABELS, frozenset({"rude", "spam"})]))
def test_finish_of_unlabelled_views_is_what_the_full_check_gives(
    views: list[dict[str, Any]], req: RequestLabels, hidden: frozenset[str]
) -> None:
    """finish's fast path for views without any label answers what finish_view and is_hidden
    answer for every view."""
    expected = []
    for view in views:
        done = finish_view(view, req)
        if done is not None and not is_hidden(done, hidden):
            expected.append(done)
    assert finish({"tracks": views}, req, hidden)["tracks"] == expected


def test_moderation_sql() -> None:
    mod = Moderation((A, B))
    sql = mod.sql("SELECT 1 WHERE NOT @removed(t.uri, t.did) AND x IN @removed_uris")
    assert "@removed" not in sql and "ARRAY['did:web:a.test', 'did:web:b.test']" in sql
    assert mod.sql("NOT @removed(t.uri)") is mod.sql("NOT @removed(t.uri)")  # written once
    assert Moderation(()).sql("NOT @removed(t.uri)") == "NOT false"
    # a condition on label rows a statement reads anyway (track views' lateral)
    assert mod.sql("bool_or(@removing(lb))") == f"bool_or(({mod.rows('lb')}))"
    assert "lb.src = ANY(ARRAY['did:web:a.test', 'did:web:b.test']::text[])" in mod.rows("lb")
    assert Moderation(()).sql("bool_or(@removing(lb))") == "bool_or((false))"
    with pytest.raises(ValueError):
        Moderation(("did:web:x'; DROP TABLE labels; --",))
