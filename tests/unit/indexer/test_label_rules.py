"""The label subscriber's storage rules, without a database (indexer/labels/rules.py), and the
stream URL (indexer/labels/stream.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from indexer.labels.rules import (
    LabelRow,
    account_takedown_subjects,
    is_active,
    label_time,
    newest,
    storable_problem,
)
from indexer.labels.stream import subscribe_url
from protocol.labels import Label

SRC = "did:plc:labeler234567abcdefghijk"
OTHER = "did:plc:other2345672abcdefghijk"
URI = "at://did:plc:artist234567abcdefghijklm/fm.plyr.track/3laaaaaaaaaa2"
DID = "did:plc:user2345672abcdefghijklm"


def row(cts: str, seq: int, *, val: str = "spam", neg: bool = False, uri: str = URI, src: str = SRC,
        exp: str | None = None) -> LabelRow:  # fmt: skip
    return LabelRow.of(Label(src=src, uri=uri, val=val, cts=cts, neg=neg, exp=exp), seq)


T1, T2, T3 = "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z", "2026-01-01T00:00:03.000Z"


def test_newer_cts_wins_whatever_the_seq() -> None:
    label, negation = row(T1, 5), row(T2, 3, neg=True)
    assert newest([label, negation], {}) == [negation]
    assert newest([negation, label], {}) == [negation]


def test_an_older_label_never_overrides_what_is_stored() -> None:
    stored = {(URI, SRC, "spam"): (label_time(T2), 7)}
    assert newest([row(T1, 9)], stored) == []  # older cts, later seq: still older
    assert newest([row(T2, 7)], stored) == []  # the same label again (a replay)
    assert newest([row(T2, 6, neg=True)], stored) == []
    newer = row(T3, 8)
    assert newest([newer], stored) == [newer]


def test_equal_cts_the_later_seq_then_the_later_label_wins() -> None:
    stored = {(URI, SRC, "spam"): (label_time(T2), 4)}
    later = row(T2, 5, neg=True)
    assert newest([later], stored) == [later]
    first, second = row(T1, 2), row(T1, 2, neg=True)  # one frame: its order decides
    assert newest([first, second], {}) == [second]


def test_keys_are_independent() -> None:
    a, b, c = row(T1, 1), row(T1, 1, val="porn"), row(T1, 1, src=OTHER)
    assert sorted(r.key for r in newest([a, b, c], {})) == sorted([a.key, b.key, c.key])


def test_fraction_digits_do_not_matter_and_times_out_of_range_are_clamped() -> None:
    assert label_time("2026-01-01T00:00:01.5Z") == label_time("2026-01-01T00:00:01.500000000Z")
    assert label_time("2026-01-01T01:00:00+01:00") == datetime(2026, 1, 1, tzinfo=UTC)
    assert label_time("0000-01-01T00:00:00Z").year == 1
    assert label_time("9999-12-31T23:59:59-05:00").year == 9999


def test_active_means_not_negated_and_not_expired() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert is_active(False, None, now)
    assert is_active(False, now + timedelta(seconds=1), now)
    assert not is_active(False, now, now)
    assert not is_active(True, None, now)
    expiring = row(T1, 1, exp="2026-01-02T00:00:00Z")
    assert expiring.exp == datetime(2026, 1, 2, tzinfo=UTC)


def test_account_takedown_subjects() -> None:
    rows = [
        row(T1, 1, uri=DID, val="!takedown"),
        row(T1, 1, uri=DID, val="!suspend", neg=True),
        row(T1, 1, uri=URI, val="!takedown"),  # a record: the views' business
        row(T1, 1, uri="did:plc:warned234567abcdefghijk", val="!warn"),
        row(T1, 1, uri="did:plc:notmod234567abcdefghijk", val="!takedown", src=OTHER),
    ]
    assert account_takedown_subjects(rows, frozenset({SRC})) == {DID}
    assert account_takedown_subjects(rows, frozenset()) == set()


def test_view_is_the_json_form_without_sig_and_nul_is_refused() -> None:
    r = row(T1, 1)
    assert r.view() == {"ver": 1, "src": SRC, "uri": URI, "val": "spam", "cts": T1}
    assert storable_problem(r.label) is None
    assert storable_problem(Label(src=SRC, uri=URI, val="a\x00b", cts=T1)) is not None


def test_subscribe_url() -> None:
    assert subscribe_url("https://mod.example.com", 0) == (
        "wss://mod.example.com/xrpc/com.atproto.label.subscribeLabels?cursor=0"
    )
    assert subscribe_url("http://127.0.0.1:2583", 42) == (
        "ws://127.0.0.1:2583/xrpc/com.atproto.label.subscribeLabels?cursor=42"
    )
