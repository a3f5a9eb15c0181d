"""Network plays, without a database: the name keys metadata matching compares, what a URL names,
the row a valid record makes, and the frame and Jetstream filters letting exactly the two play
collections through (not every fm.teal.* record)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from core.lexicons import project_lexicons
from indexer.frames import CommitEvent, FrameDecoder, JetstreamDecoder
from indexer.match_keys import KEY_MAX_BYTES, match_key, track_keys
from indexer.network_plays import (
    MAX_ARTIST_KEYS,
    PLAY,
    PLAY_ALPHA,
    artist_keys,
    network_play_row,
    play_url,
    track_url,
)
from indexer.records import RecordOp
from indexer.sources import JetstreamSource
from indexer.writer.checks import checked_rows
from tests.support.frames import MiniRepo, commit_frame, post_record

DID = "did:plc:alice234567abcdefghijklm"
TRACK = "at://did:plc:artist/fm.plyr.track/3kt1abcdefg22"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Night Drive", "night drive"),
        ("  Night   Drive ", "Night Drive"),
        ("Night-Drive!", "night drive"),
        ("ＮＩＧＨＴ ＤＲＩＶＥ", "night drive"),  # fullwidth (NFKC)
        ("Straße", "STRASSE"),  # casefold, not lower
        ("Guns N' Roses", "guns n roses"),
        ("AC/DC", "ac dc"),
        ("Beyonce\u0301", "Beyoncé"),  # combining accent vs precomposed
        ("a\u200bb", "a b"),  # zero-width space: a format character, a gap
        ("tab\tnew\nline", "tab new line"),
    ],
)
def test_equal_names_have_equal_keys(a: str, b: str) -> None:
    assert match_key(a) == match_key(b) is not None


@pytest.mark.parametrize(("a", "b"), [("Night Drive", "Night Drives"), ("Beyoncé", "Beyonce"), ("$ign", "sign")])
def test_different_names_stay_different(a: str, b: str) -> None:
    assert match_key(a) != match_key(b)


@pytest.mark.parametrize("value", [None, 5, ["x"], {"a": 1}, "", "   ", "!!!", "\x00\x01", "\u200b"])
def test_nothing_to_match(value: Any) -> None:
    assert match_key(value) is None


def test_huge_names_become_a_digest_and_still_compare() -> None:
    name = "\ufdfa" * 100  # NFKC expands each to 18 characters
    key = match_key(name)
    assert key is not None and key.startswith("sha256:") and len(key) < KEY_MAX_BYTES
    assert match_key(name.upper()) == key
    assert match_key("x" * 2000) != key


def test_track_keys() -> None:
    assert track_keys({"title": "Night Drive!", "artist": "Moon Unit"}) == ("night drive", "moon unit")
    assert track_keys({"title": "...", "artist": 5}) == ("", "")


def test_artist_keys_from_both_fields_deduplicated_and_bounded() -> None:
    record = {"artists": [{"artistName": "A"}, {"artistMbId": "x"}, "junk", {"artistName": "a!"}], "artistNames": ["B", 7]}
    assert artist_keys(record) == ["a", "b"]
    many = {"artistNames": [f"artist {i}" for i in range(1000)]}
    assert len(artist_keys(many)) == MAX_ARTIST_KEYS
    assert artist_keys({"artists": "not a list", "artistNames": {"a": 1}}) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (TRACK, (TRACK, None, None)),
        ("at://did:plc:artist/fm.plyr.like/3kt1abcdefg22", (None, None, None)),
        ("at://alice.example/fm.plyr.track/3kt1abcdefg22", (None, None, None)),  # a handle: unresolved
        ("at://did:plc:artist/fm.plyr.track/bad key", (None, None, None)),
        ("at://did:plc:artist/fm.plyr.track/3kt1abcdefg22/extra", (None, None, None)),
        ("https://plyr.example/track/42", (None, "plyr.example", 42)),
        ("http://PLYR.example:8080/embed/track/42/?t=1#x", (None, "plyr.example:8080", 42)),
        ("https://plyr.fm/track/7", (None, "plyr.fm", 7)),  # plyr.fm-style: matched only if the host is ours
        ("https://plyr.example/track/042", (None, None, None)),
        ("https://plyr.example/track/0", (None, None, None)),
        ("https://plyr.example/track/99999999999999999999", (None, None, None)),
        ("https://plyr.example/track/9223372036854775808", (None, None, None)),  # past bigint: 18 digits max
        ("https://user:pw@plyr.example/track/42", (None, None, None)),
        ("ftp://plyr.example/track/42", (None, None, None)),
        ("https://plyr.example/tracks/42", (None, None, None)),
        ("https://[::1/track/42", (None, None, None)),  # unparsable
        ("https://plyr.example:99999/track/42", (None, None, None)),  # bad port
        ("https://" + "a" * 10_000 + "/track/42", (None, None, None)),
        ("not a url", (None, None, None)),
        (42, (None, None, None)),
        (None, (None, None, None)),
    ],
)
def test_what_a_url_names(url: Any, expected: tuple[Any, ...]) -> None:
    assert track_url(url) == expected


def test_play_url_reads_both_fields() -> None:
    assert play_url({"originUrl": "https://spotify.example/x", "originUri": TRACK}) == (TRACK, None, None)
    assert play_url({"originUri": "https://plyr.example/track/3"}) == (None, "plyr.example", 3)
    assert play_url({}) == (None, None, None)


def _op(collection: str, record: dict[str, Any]) -> RecordOp:
    return RecordOp("create", DID, collection, "3jzfcijpj2z2a", "3kabc", "bafyrei", record)


def test_row_of_a_valid_record() -> None:
    record = {
        "$type": PLAY_ALPHA, "trackName": "Night Drive", "artists": [{"artistName": "Moon Unit"}],
        "duration": 2**63 - 1, "playedTime": "0000-01-01T00:00:00Z", "originUrl": TRACK,
        "musicServiceBaseDomain": "plyr.fm", "somethingNew": {"nested": [1, 2]},
    }  # fmt: skip
    problem, row = checked_rows(_op(PLAY_ALPHA, record), project_lexicons())
    assert problem is None
    assert row[3] == PLAY_ALPHA and row[6] == "Night Drive" and row[7] == "night drive"
    assert orjson.loads(row[8]) == ["moon unit"] and row[9] == 2**63 - 1
    assert row[10].year == 1  # a datetime the syntax allows, clamped in its column
    assert row[11:14] == (TRACK, None, None) and row[14] == record and row[15] is None
    bool_duration = network_play_row(_op(PLAY, {"$type": PLAY, "trackName": "x", "duration": True}))
    assert bool_duration[9] is None


@pytest.mark.parametrize(
    "record",
    [
        {"$type": PLAY_ALPHA},
        {"$type": PLAY_ALPHA, "trackName": None},
        {"$type": PLAY_ALPHA, "trackName": ["x"]},
        {"$type": PLAY_ALPHA, "trackName": "x", "duration": 1.5},
        {"$type": PLAY_ALPHA, "trackName": "x", "artistNames": "A"},
        {"$type": PLAY_ALPHA, "trackName": "x", "artistNames": [""]},
        {"$type": PLAY_ALPHA, "trackName": "x", "artists": [{"artistName": 5}]},
        {"$type": PLAY_ALPHA, "trackName": "x", "submissionClientAgent": "x" * 300},
        {"$type": PLAY, "trackName": "x", "originUri": "spotify.com/track/1"},
        {"$type": PLAY, "trackName": "x", "trackMbId": "6f1a1e2b-0000-0000-0000-000000000000"},
        {"$type": PLAY, "trackName": "x", "playedTime": 1700000000},
    ],
)
def test_records_the_lexicons_refuse(record: dict[str, Any]) -> None:
    problem, row = checked_rows(_op(record["$type"], record), project_lexicons())
    assert problem is not None and row is None


def test_record_key_must_be_a_tid() -> None:
    record = {"$type": PLAY, "trackName": "x"}
    op = RecordOp("create", DID, PLAY, "self", "3kabc", "bafyrei", record)
    assert checked_rows(op, project_lexicons())[0] is not None


def test_frame_filter_keeps_only_the_play_collections() -> None:
    repo = MiniRepo(DID)
    play = {"$type": PLAY, "trackName": "x"}
    parts = repo.commit(
        [
            ("create", "app.bsky.feed.post", "3kp1", post_record("hi")),
            ("create", "fm.teal.alpha.actor.status", "self", {"$type": "fm.teal.alpha.actor.status"}),
            ("create", PLAY, "3kt1", play),
            ("create", PLAY_ALPHA, "3kt2", play | {"$type": PLAY_ALPHA}),
        ]
    )
    ev = FrameDecoder().decode(commit_frame(1, parts))
    assert isinstance(ev, CommitEvent)
    assert sorted(op["path"] for op in ev.ops) == [f"{PLAY_ALPHA}/3kt2", f"{PLAY}/3kt1"]
    status_only = repo.commit([("update", "fm.teal.alpha.actor.status", "self", {"$type": "x"})])
    assert FrameDecoder().decode(commit_frame(2, status_only, car=b"\x00not a car")) is None


def test_jetstream_filter_and_subscription() -> None:
    d = JetstreamDecoder()
    commit = {"rev": "3kabc", "operation": "create", "collection": PLAY, "rkey": "3kt1",
              "record": {"$type": PLAY, "trackName": "x"}, "cid": "bafyreia"}  # fmt: skip
    ev = d.decode(orjson.dumps({"did": DID, "time_us": 10, "kind": "commit", "commit": commit}))
    assert isinstance(ev, CommitEvent) and ev.records and ev.records[0].collection == PLAY
    status = commit | {"collection": "fm.teal.alpha.actor.status"}
    assert d.decode(orjson.dumps({"did": DID, "time_us": 11, "kind": "commit", "commit": status})) is None
    url = JetstreamSource("wss://jetstream.example/subscribe").connect_url(None)
    assert "wantedCollections=fm.plyr.%2A" in url
    assert f"wantedCollections={PLAY_ALPHA}" in url and f"wantedCollections={PLAY}" in url
