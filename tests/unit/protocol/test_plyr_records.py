"""The plyr record lexicons: our documents must accept exactly what the published plyr.fm
lexicons accept. Checked two ways: the schemas are equal once descriptions are set aside, and a
set of example records (valid and invalid, with and without optional fields) gets the same
verdict from both."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from core.lexicons import LEXICONS_DIR, load_lexicons
from protocol.lexicon import Lexicons

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
CID = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"
RAW_CID = "bafkreib2d4sg3bqpy5y7q4r2ugbtfb5d2qkbhkmxnk4w3m5a2tqp7z7xvy"
TRACK_URI = f"at://{DID}/fm.plyr.track/3jzfcijpj2z2a"
NOW = "2025-03-01T12:34:56.789Z"
STRONG_REF = {"uri": TRACK_URI, "cid": CID}
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"

# The published documents, by file name in ../shared/reference/lexicons. (privateMedia.json
# uses the draft "space" type, which is not part of the Lexicon spec, and is not a record.)
PUBLISHED_FILES = {
    "fm.plyr.track": "track.json",
    "fm.plyr.like": "like.json",
    "fm.plyr.comment": "comment.json",
    "fm.plyr.list": "list.json",
    "fm.plyr.actor.profile": "profile.json",
}


@pytest.fixture(scope="module")
def ours() -> Lexicons:
    return load_lexicons()


@pytest.fixture(scope="module")
def published(shared_dir: Path) -> Lexicons:
    folder = shared_dir / "reference/lexicons"
    docs = [json.loads((folder / name).read_text()) for name in PUBLISHED_FILES.values()]
    for nsid in ("com.atproto.repo.strongRef", "com.atproto.label.defs"):
        path = LEXICONS_DIR / (nsid.replace(".", "/") + ".json")
        docs.append(json.loads(path.read_text()))
    lexicons = Lexicons.load(docs)
    assert lexicons.unresolved_refs() == []
    return lexicons


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


@pytest.mark.parametrize("nsid", list(PUBLISHED_FILES))
def test_schemas_equal_the_published_ones(shared_dir: Path, nsid: str) -> None:
    theirs = json.loads((shared_dir / "reference/lexicons" / PUBLISHED_FILES[nsid]).read_text())
    mine = json.loads((LEXICONS_DIR / (nsid.replace(".", "/") + ".json")).read_text())
    assert _without_descriptions(mine) == _without_descriptions(theirs)
    # Our prose is our own.
    for name, schema in mine["defs"].items():
        if "description" in schema and "description" in theirs["defs"].get(name, {}):
            assert schema["description"] != theirs["defs"][name]["description"]


# --- example records ----------------------------------------------------------------------


def track(**fields: Any) -> dict[str, Any]:
    record = {
        "$type": "fm.plyr.track",
        "title": "Midnight Drive",
        "artist": "Nova Lights",
        "fileType": "mp3",
        "createdAt": NOW,
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not DROP}


DROP: Any = object()

FULL_TRACK = track(
    audioUrl="https://cdn.plyr.fm/audio/abc.mp3",
    album="Night Roads",
    duration=245,
    features=[
        {"did": DID, "handle": "someone.bsky.social", "displayName": "Someone"},
        {"did": "did:web:guest.example.com"},
    ],
    imageUrl="https://cdn.plyr.fm/images/abc.jpg",
    supportGate={"type": "any"},
    description="Recorded live. " * 100,
    labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "nudity"}]},
    audioBlob={
        "$type": "blob",
        "ref": {"$link": RAW_CID},
        "mimeType": "audio/mpeg",
        "size": 5_242_880,
    },
)


def like(**fields: Any) -> dict[str, Any]:
    record = {"$type": "fm.plyr.like", "subject": STRONG_REF, "createdAt": NOW, **fields}
    return {k: v for k, v in record.items() if v is not DROP}


def comment(**fields: Any) -> dict[str, Any]:
    record = {
        "$type": "fm.plyr.comment",
        "subject": STRONG_REF,
        "text": "love the drop at 1:32",
        "timestampMs": 92_000,
        "createdAt": NOW,
        **fields,
    }
    return {k: v for k, v in record.items() if v is not DROP}


def plist(**fields: Any) -> dict[str, Any]:
    record = {
        "$type": "fm.plyr.list",
        "items": [{"subject": STRONG_REF}],
        "createdAt": NOW,
        **fields,
    }
    return {k: v for k, v in record.items() if v is not DROP}


def profile(**fields: Any) -> dict[str, Any]:
    record = {"$type": "fm.plyr.actor.profile", "createdAt": NOW, **fields}
    return {k: v for k, v in record.items() if v is not DROP}


VALID: list[tuple[str, str, dict[str, Any]]] = [
    ("track minimal", "fm.plyr.track", track()),
    ("track full", "fm.plyr.track", FULL_TRACK),
    (
        "track legacy blob",
        "fm.plyr.track",
        track(audioBlob={"cid": RAW_CID, "mimeType": "audio/flac"}),
    ),
    ("track unknown gate type", "fm.plyr.track", track(supportGate={"type": "patreon"})),
    (
        "track unknown label union member",
        "fm.plyr.track",
        track(labels={"$type": "com.example.labels", "x": 1}),
    ),
    ("track 10 features", "fm.plyr.track", track(features=[{"did": DID}] * 10)),
    ("track max title", "fm.plyr.track", track(title="x" * 256)),
    ("track empty album", "fm.plyr.track", track(album="")),
    ("track zero duration", "fm.plyr.track", track(duration=0)),
    ("track extra field", "fm.plyr.track", track(bpm=128)),
    (
        "track 100 MiB blob",
        "fm.plyr.track",
        track(audioBlob={**FULL_TRACK["audioBlob"], "size": 104_857_600}),
    ),
    ("like", "fm.plyr.like", like()),
    (
        "like of any record",
        "fm.plyr.like",
        like(subject={"uri": f"at://{DID}/app.bsky.feed.post/3jzfcijpj2z2a", "cid": CID}),
    ),
    ("comment minimal", "fm.plyr.comment", comment()),
    ("comment edited", "fm.plyr.comment", comment(updatedAt="2025-03-02T00:00:00Z")),
    ("comment 1000 bytes", "fm.plyr.comment", comment(text="é" * 500)),
    ("comment at zero", "fm.plyr.comment", comment(timestampMs=0)),
    ("list minimal", "fm.plyr.list", plist()),
    ("list empty", "fm.plyr.list", plist(items=[])),
    ("list full", "fm.plyr.list", plist(name="Summer", listType="playlist", updatedAt=NOW)),
    ("list other type", "fm.plyr.list", plist(listType="mixtape")),
    ("list 64 emoji name", "fm.plyr.list", plist(name=FAMILY * 10)),
    ("list 500 items", "fm.plyr.list", plist(items=[{"subject": STRONG_REF}] * 500)),
    ("profile minimal", "fm.plyr.actor.profile", profile()),
    (
        "profile full",
        "fm.plyr.actor.profile",
        profile(avatar="https://cdn.plyr.fm/a.png", bio="hi " * 80, updatedAt=NOW),
    ),
    ("profile 256 grapheme bio", "fm.plyr.actor.profile", profile(bio="é" * 256)),
]

INVALID: list[tuple[str, str, dict[str, Any], str]] = [
    ("track no $type", "fm.plyr.track", track(**{"$type": DROP}), "record/$type: required"),
    (
        "track wrong $type",
        "fm.plyr.track",
        track(**{"$type": "fm.plyr.like"}),
        "record/$type: must be",
    ),
    ("track no title", "fm.plyr.track", track(title=DROP), "record/title: required"),
    (
        "track empty title",
        "fm.plyr.track",
        track(title=""),
        "record/title: must be at least 1 bytes",
    ),
    (
        "track long title",
        "fm.plyr.track",
        track(title="x" * 257),
        "record/title: must be at most 256",
    ),
    (
        "track long artist bytes",
        "fm.plyr.track",
        track(artist="日" * 86),
        "record/artist: must be at most 256",
    ),
    (
        "track long fileType",
        "fm.plyr.track",
        track(fileType="x" * 17),
        "record/fileType: must be at most 16",
    ),
    ("track no createdAt", "fm.plyr.track", track(createdAt=DROP), "record/createdAt: required"),
    (
        "track bad createdAt",
        "fm.plyr.track",
        track(createdAt="yesterday"),
        "record/createdAt: must be a valid datetime",
    ),
    (
        "track negative duration",
        "fm.plyr.track",
        track(duration=-1),
        "record/duration: must be at least 0",
    ),
    (
        "track float duration",
        "fm.plyr.track",
        track(duration=245.5),
        "record/duration: must be an integer",
    ),
    (
        "track bool duration",
        "fm.plyr.track",
        track(duration=True),
        "record/duration: must be an integer",
    ),
    (
        "track bad audioUrl",
        "fm.plyr.track",
        track(audioUrl="no scheme"),
        "record/audioUrl: must be a valid uri",
    ),
    (
        "track 11 features",
        "fm.plyr.track",
        track(features=[{"did": DID}] * 11),
        "record/features: must have at most 10",
    ),
    (
        "track feature bad did",
        "fm.plyr.track",
        track(features=[{"did": "alice"}]),
        "record/features/0/did: must be a valid did",
    ),
    (
        "track feature no did",
        "fm.plyr.track",
        track(features=[{"handle": "a.b.c"}]),
        "record/features/0/did: required",
    ),
    (
        "track feature bad handle",
        "fm.plyr.track",
        track(features=[{"did": DID, "handle": "x"}]),
        "record/features/0/handle: must be a valid handle",
    ),
    (
        "track gate without type",
        "fm.plyr.track",
        track(supportGate={}),
        "record/supportGate/type: required",
    ),
    (
        "track labels not a union member",
        "fm.plyr.track",
        track(labels={"values": []}),
        "record/labels/$type: required",
    ),
    (
        "track too many labels",
        "fm.plyr.track",
        track(labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "x"}] * 11}),
        "record/labels/values: must have at most 10",
    ),
    (
        "track long label",
        "fm.plyr.track",
        track(
            labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "x" * 129}]}
        ),
        "record/labels/values/0/val: must be at most 128",
    ),
    (
        "track image blob",
        "fm.plyr.track",
        track(audioBlob={**FULL_TRACK["audioBlob"], "mimeType": "image/png"}),
        "record/audioBlob/mimeType: image/png is not accepted",
    ),
    (
        "track huge blob",
        "fm.plyr.track",
        track(audioBlob={**FULL_TRACK["audioBlob"], "size": 104_857_601}),
        "record/audioBlob/size: must be at most 104857600",
    ),
    (
        "track blob as url",
        "fm.plyr.track",
        track(audioBlob="https://x.y/a.mp3"),
        "record/audioBlob: must be a blob",
    ),
    ("like no subject", "fm.plyr.like", like(subject=DROP), "record/subject: required"),
    (
        "like subject without cid",
        "fm.plyr.like",
        like(subject={"uri": TRACK_URI}),
        "record/subject/cid: required",
    ),
    (
        "like subject bad uri",
        "fm.plyr.like",
        like(subject={"uri": "https://plyr.fm/t/1", "cid": CID}),
        "record/subject/uri: must be a valid at-uri",
    ),
    (
        "like subject bad cid",
        "fm.plyr.like",
        like(subject={"uri": TRACK_URI, "cid": "x"}),
        "record/subject/cid: must be a valid cid",
    ),
    (
        "like subject as string",
        "fm.plyr.like",
        like(subject=TRACK_URI),
        "record/subject: must be an object",
    ),
    ("comment empty", "fm.plyr.comment", comment(text=""), "record/text: must be at least 1 bytes"),
    (
        "comment 1001 bytes",
        "fm.plyr.comment",
        comment(text="é" * 500 + "x"),
        "record/text: must be at most 1000 bytes (UTF-8), got 1001",
    ),
    (
        "comment no timestamp",
        "fm.plyr.comment",
        comment(timestampMs=DROP),
        "record/timestampMs: required",
    ),
    (
        "comment negative timestamp",
        "fm.plyr.comment",
        comment(timestampMs=-5),
        "record/timestampMs: must be at least 0",
    ),
    (
        "comment string timestamp",
        "fm.plyr.comment",
        comment(timestampMs="5"),
        "record/timestampMs: must be an integer",
    ),
    (
        "comment bad updatedAt",
        "fm.plyr.comment",
        comment(updatedAt="2025-03-02"),
        "record/updatedAt: must be a valid datetime",
    ),
    ("list no items", "fm.plyr.list", plist(items=DROP), "record/items: required"),
    (
        "list 501 items",
        "fm.plyr.list",
        plist(items=[{"subject": STRONG_REF}] * 501),
        "record/items: must have at most 500",
    ),
    (
        "list item without subject",
        "fm.plyr.list",
        plist(items=[{"uri": TRACK_URI}]),
        "record/items/0/subject: required",
    ),
    (
        "list 65 grapheme name",
        "fm.plyr.list",
        plist(name="a" * 65),
        "record/name: must be at most 64 graphemes",
    ),
    (
        "list name too many bytes",
        "fm.plyr.list",
        plist(name=FAMILY * 11),
        "record/name: must be at most 256 bytes",
    ),
    ("list null name", "fm.plyr.list", plist(name=None), "record/name: must not be null"),
    (
        "profile no createdAt",
        "fm.plyr.actor.profile",
        profile(createdAt=DROP),
        "record/createdAt: required",
    ),
    (
        "profile 257 grapheme bio",
        "fm.plyr.actor.profile",
        profile(bio="é" * 257),
        "record/bio: must be at most 256 graphemes",
    ),
    (
        "profile bio too many bytes",
        "fm.plyr.actor.profile",
        profile(bio=FAMILY * 103),
        "record/bio: must be at most 2560 bytes",
    ),
    (
        "profile bad avatar",
        "fm.plyr.actor.profile",
        profile(avatar="avatar.png"),
        "record/avatar: must be a valid uri",
    ),
    (
        "profile float anywhere",
        "fm.plyr.actor.profile",
        profile(extra={"score": 0.5}),
        "record/extra/score: floats are not allowed",
    ),
]


@pytest.mark.parametrize("name,nsid,record", VALID, ids=[case[0] for case in VALID])
def test_valid_examples(
    ours: Lexicons, published: Lexicons, name: str, nsid: str, record: dict[str, Any]
) -> None:
    assert ours.validate_record(nsid, record) == []
    assert published.validate_record(nsid, record) == []


@pytest.mark.parametrize("name,nsid,record,expected", INVALID, ids=[case[0] for case in INVALID])
def test_invalid_examples(
    ours: Lexicons, published: Lexicons, name: str, nsid: str, record: dict[str, Any], expected: str
) -> None:
    problems = ours.validate_record(nsid, record)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems
    assert published.validate_record(nsid, record) == problems


def test_examples_do_not_share_state(ours: Lexicons) -> None:
    record = copy.deepcopy(FULL_TRACK)
    assert ours.validate_record("fm.plyr.track", record) == []
    assert record == FULL_TRACK  # validation never changes the data


def test_rkeys(ours: Lexicons) -> None:
    assert ours.validate_record("fm.plyr.track", track(), rkey="3jzfcijpj2z2a") == []
    assert ours.validate_record("fm.plyr.track", track(), rkey="self") != []
    assert ours.validate_record("fm.plyr.actor.profile", profile(), rkey="self") == []
    assert ours.validate_record("fm.plyr.actor.profile", profile(), rkey="3jzfcijpj2z2a") != []


def _node_count(value: Any) -> int:
    """The cheapest Python walk over a record: the baseline validation is measured against."""
    if isinstance(value, dict):
        return 1 + sum(_node_count(item) for item in value.values())
    if isinstance(value, list):
        return 1 + sum(_node_count(item) for item in value)
    return 1


def test_track_validation_is_fast(ours: Lexicons) -> None:
    """Every indexed record is validated, so validating a full track must cost only a few plain
    walks over the same record (about 8x here). Both are timed in alternating rounds of the same
    run and the best round of each is compared, so a busy machine slows both alike."""
    record = FULL_TRACK
    validate = ours.validate_record
    best_validate = best_walk = float("inf")
    for _ in range(30):
        start = time.perf_counter()
        for _ in range(200):
            validate("fm.plyr.track", record)
        best_validate = min(best_validate, time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(200):
            _node_count(record)
        best_walk = min(best_walk, time.perf_counter() - start)
    ratio = best_validate / best_walk
    assert ratio < 20, f"validation costs {ratio:.1f} walks of the record"
