"""Validating data against lexicons: every type and constraint, valid and invalid, with the
problem messages (JSON path + what is wrong) the validator reports."""

from __future__ import annotations

import base64
from typing import Any

import grapheme
import pytest

from protocol.lexicon import Lexicons

NSID = "com.example.kitchen"
CID = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"
RAW_CID = "bafkreib2d4sg3bqpy5y7q4r2ugbtfb5d2qkbhkmxnk4w3m5a2tqp7z7xvy"
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # 👨‍👩‍👧‍👦, 25 bytes
FLAG_FR = "\U0001f1eb\U0001f1f7"  # 🇫🇷, 8 bytes
THUMB = "\U0001f44d\U0001f3fd"  # 👍🏽 (skin tone modifier), 8 bytes
E_ACUTE = "e\u0301"  # é as e + combining accent: 1 grapheme, 3 bytes


def _prop(**schema: Any) -> dict[str, Any]:
    return schema


KITCHEN: dict[str, Any] = {
    "lexicon": 1,
    "id": NSID,
    "defs": {
        "main": {
            "type": "record",
            "key": "tid",
            "record": {
                "type": "object",
                "required": ["req"],
                "nullable": ["nullableStr", "req"],
                "properties": {
                    "req": _prop(type="string"),
                    "nullableStr": _prop(type="string"),
                    "nothing": _prop(type="null"),
                    "bool": _prop(type="boolean"),
                    "constBool": _prop(type="boolean", const=True),
                    "int": _prop(type="integer"),
                    "range": _prop(type="integer", minimum=10, maximum=20),
                    "enumInt": _prop(type="integer", enum=[4, 9, 16]),
                    "constInt": _prop(type="integer", const=42),
                    "defaultInt": _prop(type="integer", default=7),
                    "str": _prop(type="string"),
                    "len": _prop(type="string", minLength=2, maxLength=8),
                    "graphemes": _prop(type="string", minGraphemes=2, maxGraphemes=3),
                    "enumStr": _prop(type="string", enum=["fish", "tree"]),
                    "constStr": _prop(type="string", const="fixed"),
                    "known": _prop(type="string", knownValues=["blue", "green"]),
                    "token": _prop(type="string", knownValues=[f"{NSID}#demoToken"]),
                    "did": _prop(type="string", format="did"),
                    "handle": _prop(type="string", format="handle"),
                    "atIdentifier": _prop(type="string", format="at-identifier"),
                    "nsid": _prop(type="string", format="nsid"),
                    "atUri": _prop(type="string", format="at-uri"),
                    "cid": _prop(type="string", format="cid"),
                    "datetime": _prop(type="string", format="datetime"),
                    "language": _prop(type="string", format="language"),
                    "uri": _prop(type="string", format="uri"),
                    "tid": _prop(type="string", format="tid"),
                    "recordKey": _prop(type="string", format="record-key"),
                    "bytes": _prop(type="bytes"),
                    "sizedBytes": _prop(type="bytes", minLength=2, maxLength=4),
                    "link": _prop(type="cid-link"),
                    "blob": _prop(type="blob"),
                    "audio": _prop(
                        type="blob", accept=["audio/*", "application/ogg"], maxSize=1000
                    ),
                    "anyBlob": _prop(type="blob", accept=["*/*"]),
                    "array": _prop(type="array", items={"type": "integer"}),
                    "lenArray": _prop(
                        type="array", items={"type": "string"}, minLength=1, maxLength=2
                    ),
                    "object": _prop(
                        type="object",
                        required=["a"],
                        properties={"a": {"type": "integer"}, "b": {"type": "string"}},
                    ),
                    "ref": _prop(type="ref", ref="#point"),
                    "refs": _prop(type="array", items={"type": "ref", "ref": f"{NSID}#point"}),
                    "openUnion": _prop(type="union", refs=["#point", "com.example.other"]),
                    "closedUnion": _prop(type="union", refs=["#point"], closed=True),
                    "emptyUnion": _prop(type="union", refs=[]),
                    "unknown": _prop(type="unknown"),
                    "tree": _prop(type="ref", ref="#node"),
                    "recordRef": _prop(type="ref", ref="com.example.other"),
                },
            },
        },
        "point": {
            "type": "object",
            "required": ["x"],
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        },
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"type": "ref", "ref": "#node"}},
            },
        },
        "demoToken": {"type": "token", "description": "a token"},
        "shortString": {"type": "string", "maxLength": 3},
    },
}

OTHER: dict[str, Any] = {
    "lexicon": 1,
    "id": "com.example.other",
    "defs": {
        "main": {
            "type": "record",
            "key": "literal:self",
            "record": {"type": "object", "properties": {"n": {"type": "integer"}}},
        }
    },
}


@pytest.fixture(scope="module")
def lex() -> Lexicons:
    return Lexicons.load([KITCHEN, OTHER])


def check(lex: Lexicons, **fields: Any) -> list[str]:
    record = {"$type": NSID, "req": "r", **fields}
    return lex.validate_record(NSID, record)


def test_minimal_record(lex: Lexicons) -> None:
    assert check(lex) == []


# --- record and object structure ---------------------------------------------------------


def test_record_type_field(lex: Lexicons) -> None:
    assert lex.validate_record(NSID, {"req": "r"}) == [
        'record/$type: required field is missing (must be "com.example.kitchen")'
    ]
    assert lex.validate_record(NSID, {"$type": "com.example.other", "req": "r"}) == [
        'record/$type: must be "com.example.kitchen", got "com.example.other"'
    ]
    assert lex.validate_record(NSID, {"$type": NSID + "#main", "req": "r"}) != []
    assert lex.validate_record(NSID, []) == ["record: must be an object, not array"]
    assert lex.validate_record(NSID, None) == ["record: must be an object, not null"]


def test_required_and_nullable(lex: Lexicons) -> None:
    assert lex.validate_record(NSID, {"$type": NSID}) == ["record/req: required field is missing"]
    # req is required but nullable: null is a value, so it is present.
    assert lex.validate_record(NSID, {"$type": NSID, "req": None}) == []
    assert check(lex, nullableStr=None) == []
    assert check(lex, str=None) == ["record/str: must not be null"]
    assert check(lex, nothing=None) == []
    assert check(lex, nothing=0) == ["record/nothing: must be null, not integer"]


def test_unknown_fields_are_allowed_but_must_be_data(lex: Lexicons) -> None:
    assert check(lex, extra={"deep": [1, "two", True, None, {"$link": CID}]}) == []
    assert check(lex, extra=1.5) == ["record/extra: floats are not allowed in atproto data"]
    assert check(lex, extra={"a": [0.1]}) == [
        "record/extra/a/0: floats are not allowed in atproto data"
    ]
    assert check(lex, extra={"$link": "nope"}) == [
        'record/extra: must be a CID link ({"$link": cid})'
    ]
    assert check(lex, extra={"$type": 5}) == ["record/extra/$type: must be a non-empty string"]
    assert check(lex, extra=2**64) == ["record/extra: integer out of the 64-bit range"]
    assert check(lex, **{"$unknownDollar": 1.5}) == []  # reserved "$" fields are ignored


def test_nested_object(lex: Lexicons) -> None:
    assert check(lex, object={"a": 1, "b": "x", "c": "extra"}) == []
    assert check(lex, object={"b": 1}) == [
        "record/object/a: required field is missing",
        "record/object/b: must be a string, not integer",
    ]
    assert check(lex, object="x") == ["record/object: must be an object, not string"]


# --- scalars -------------------------------------------------------------------------------


def test_boolean(lex: Lexicons) -> None:
    assert check(lex, bool=False, constBool=True) == []
    assert check(lex, bool=0) == ["record/bool: must be a boolean, not integer"]
    assert check(lex, bool="true") == ["record/bool: must be a boolean, not string"]
    assert check(lex, constBool=False) == ["record/constBool: must be true"]


def test_integer(lex: Lexicons) -> None:
    assert check(lex, int=0, range=10, enumInt=16, constInt=42, defaultInt=-3) == []
    assert check(lex, int=-(2**63)) == []
    assert check(lex, int=2**63 - 1) == []
    assert check(lex, int=2**63) == [
        "record/int: is above the 64-bit range, got 9223372036854775808"
    ]
    assert check(lex, int=True) == ["record/int: must be an integer, not boolean"]
    assert check(lex, int=1.0) == ["record/int: must be an integer, not float"]
    assert check(lex, int="1") == ["record/int: must be an integer, not string"]
    assert check(lex, range=9) == ["record/range: must be at least 10, got 9"]
    assert check(lex, range=21) == ["record/range: must be at most 20, got 21"]
    assert check(lex, range=20) == []
    assert check(lex, enumInt=5) == ["record/enumInt: must be one of [4,9,16], got 5"]
    assert check(lex, constInt=41) == ["record/constInt: must be 42, got 41"]


def test_string_basics(lex: Lexicons) -> None:
    assert check(lex, str="", enumStr="tree", constStr="fixed", known="purple") == []
    assert check(lex, str=5) == ["record/str: must be a string, not integer"]
    assert check(lex, enumStr="rock") == [
        'record/enumStr: must be one of ["fish","tree"], got "rock"'
    ]
    assert check(lex, constStr="other") == ['record/constStr: must be "fixed"']
    # knownValues (and token names in them) only inform; any string is fine.
    assert check(lex, token="anything at all") == []


def test_string_length_is_utf8_bytes(lex: Lexicons) -> None:
    assert check(lex, len="ab") == []
    assert check(lex, len="abcdefgh") == []
    assert check(lex, len="a") == ["record/len: must be at least 2 bytes (UTF-8), got 1"]
    assert check(lex, len="abcdefghi") == ["record/len: must be at most 8 bytes (UTF-8), got 9"]
    # One character, but two UTF-8 bytes: long enough.
    assert check(lex, len="é") == []
    # Four characters, but 12 bytes (CJK is 3 bytes each): too long.
    assert check(lex, len="日本語話") == ["record/len: must be at most 8 bytes (UTF-8), got 12"]
    assert check(lex, len="ééé") == []  # 6 bytes
    assert check(lex, len="éééé") == []  # 8 bytes
    assert check(lex, len="ééééé") == ["record/len: must be at most 8 bytes (UTF-8), got 10"]
    # A single emoji of 25 bytes.
    assert check(lex, len=FAMILY) == ["record/len: must be at most 8 bytes (UTF-8), got 25"]
    assert check(lex, len=FLAG_FR) == []  # exactly 8 bytes


def test_string_graphemes(lex: Lexicons) -> None:
    assert check(lex, graphemes="ab") == []
    assert check(lex, graphemes="abc") == []
    assert check(lex, graphemes="a") == ["record/graphemes: must be at least 2 graphemes, got 1"]
    assert check(lex, graphemes="abcd") == [
        "record/graphemes: must be at most 3 graphemes, got more"
    ]
    # A ZWJ family is 7 code points, 25 bytes and one grapheme.
    assert len(FAMILY) == 7 and len(FAMILY.encode()) == 25
    assert check(lex, graphemes=FAMILY) == ["record/graphemes: must be at least 2 graphemes, got 1"]
    assert check(lex, graphemes=FAMILY * 3) == []
    assert check(lex, graphemes=FAMILY * 4) == [
        "record/graphemes: must be at most 3 graphemes, got more"
    ]
    # Flags are pairs of regional indicators: two flags are two graphemes, not four.
    assert check(lex, graphemes=FLAG_FR * 2) == []
    assert check(lex, graphemes=FLAG_FR + FLAG_FR + FLAG_FR) == []
    assert check(lex, graphemes=FLAG_FR * 4) == [
        "record/graphemes: must be at most 3 graphemes, got more"
    ]
    # Skin-tone modifiers and combining accents join the preceding character.
    assert check(lex, graphemes=THUMB * 3) == []
    assert check(lex, graphemes=E_ACUTE * 3) == []
    assert check(lex, graphemes=E_ACUTE * 4) != []
    # CR LF is one grapheme.
    assert check(lex, graphemes="a\r\nb") == []
    assert check(lex, graphemes="\r\n") == ["record/graphemes: must be at least 2 graphemes, got 1"]


FORMAT_CASES = [
    ("did", "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "did:PLC:x"),
    ("did", "did:web:example.com", "plc:abc"),
    ("handle", "alice.bsky.social", "alice"),
    ("atIdentifier", "alice.bsky.social", "at://alice.bsky.social"),
    ("atIdentifier", "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "did:"),
    ("nsid", "fm.plyr.track", "fm"),
    ("atUri", "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/fm.plyr.track/3jzfcijpj2z2a", "https://x.y/z"),
    ("cid", CID, "Qm!"),
    ("datetime", "1985-04-12T23:20:50.123Z", "1985-04-12"),
    ("datetime", "1985-04-12T23:20:50.123-07:00", "1985-04-12T23:20:50.123-00:00"),
    ("language", "pt-BR", "pt_BR"),
    ("uri", "https://plyr.fm/track/1", "not a uri"),
    ("tid", "3jzfcijpj2z2a", "3jzfcijpj2z2"),
    ("recordKey", "self", ".."),
]


@pytest.mark.parametrize("field,good,bad", FORMAT_CASES)
def test_string_formats(lex: Lexicons, field: str, good: str, bad: str) -> None:
    fmt = KITCHEN["defs"]["main"]["record"]["properties"][field]["format"]
    assert check(lex, **{field: good}) == []
    assert check(lex, **{field: bad}) == [f"record/{field}: must be a valid {fmt}"]


# --- bytes, links, blobs -----------------------------------------------------------------


def b64(data: bytes, pad: bool = True) -> str:
    text = base64.b64encode(data).decode()
    return text if pad else text.rstrip("=")


def test_bytes(lex: Lexicons) -> None:
    assert check(lex, bytes={"$bytes": b64(b"\x00\x01\xff")}) == []
    assert check(lex, bytes={"$bytes": b64(b"\x00\x01", pad=False)}) == []
    assert check(lex, bytes={"$bytes": ""}) == []
    assert check(lex, bytes=b"raw from a CBOR decoder") == []
    bad = 'record/bytes: must be bytes ({"$bytes": base64})'
    assert check(lex, bytes="AAEC") == [bad]
    assert check(lex, bytes={"$bytes": 5}) == [bad]
    assert check(lex, bytes={"$bytes": "not base64!"}) == [bad]
    assert check(lex, bytes={"$bytes": "-_-_"}) == [bad]  # URL-safe alphabet is not allowed
    assert check(lex, bytes={"$bytes": "AAEC", "more": 1}) == [bad]
    assert check(lex, sizedBytes={"$bytes": b64(b"ab")}) == []
    assert check(lex, sizedBytes={"$bytes": b64(b"abcd")}) == []
    assert check(lex, sizedBytes={"$bytes": b64(b"a")}) == [
        "record/sizedBytes: must be at least 2 bytes, got 1"
    ]
    assert check(lex, sizedBytes={"$bytes": b64(b"abcde")}) == [
        "record/sizedBytes: must be at most 4 bytes, got 5"
    ]


def test_cid_link(lex: Lexicons) -> None:
    assert check(lex, link={"$link": CID}) == []
    binary = bytes.fromhex("01711220") + b"\x00" * 32  # CIDv1, dag-cbor, sha-256
    assert check(lex, link=binary) == []
    assert check(lex, link=b"\x00" + binary) == []  # with CBOR tag 42's multibase prefix
    bad = 'record/link: must be a CID link ({"$link": cid})'
    assert check(lex, link=CID) == [bad]
    assert check(lex, link={"$link": "nope"}) == [bad]
    assert check(lex, link={"$link": CID, "x": 1}) == [bad]
    assert check(lex, link=b"\x12\x20") == [bad]
    assert check(lex, link=binary[:-1]) == [bad]  # digest shorter than announced
    assert check(lex, link=binary + b"\x00") == [bad]
    assert check(lex, link=b"\x01\x71\x12") == [bad]


def blob(mime: str = "audio/mpeg", size: int = 100, cid: str = RAW_CID) -> dict[str, Any]:
    return {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": size}


def test_blob(lex: Lexicons) -> None:
    assert check(lex, blob=blob("image/png")) == []
    assert check(lex, blob={"cid": RAW_CID, "mimeType": "image/jpeg"}) == []  # legacy form
    assert check(lex, blob="x") == ["record/blob: must be a blob, not string"]
    assert check(lex, blob={"ref": {"$link": RAW_CID}}) == [
        'record/blob: must be a blob (an object with $type "blob")'
    ]
    assert check(lex, blob={**blob(), "$type": "blobby"}) == ['record/blob/$type: must be "blob"']
    assert check(lex, blob=blob(size=0)) == ["record/blob/size: must be a positive integer"]
    assert check(lex, blob={**blob(), "size": 1.0}) == [
        "record/blob/size: must be a positive integer"
    ]
    assert check(lex, blob=blob(mime="")) == ["record/blob/mimeType: must be a non-empty string"]
    assert check(lex, blob=blob(cid="nope")) == [
        'record/blob/ref: must be a CID link ({"$link": cid})'
    ]
    assert check(lex, blob={"cid": "nope", "mimeType": "image/png"}) == [
        "record/blob/cid: must be a valid cid"
    ]


def test_blob_accept_and_size(lex: Lexicons) -> None:
    assert check(lex, audio=blob("audio/mpeg")) == []
    assert check(lex, audio=blob("audio/flac", size=1000)) == []
    assert check(lex, audio=blob("application/ogg")) == []
    assert check(lex, audio=blob("Audio/MPEG")) == []  # MIME types are case-insensitive
    assert check(lex, audio={"cid": RAW_CID, "mimeType": "audio/wav"}) == []
    assert check(lex, audio=blob("video/mp4")) == [
        "record/audio/mimeType: video/mp4 is not accepted (accepts audio/*, application/ogg)"
    ]
    assert check(lex, audio=blob("audio")) != []
    assert check(lex, audio=blob("application/oggx")) != []
    assert check(lex, audio=blob(size=1001)) == [
        "record/audio/size: must be at most 1000 bytes, got 1001"
    ]
    assert check(lex, anyBlob=blob("application/x-whatever")) == []


# --- containers, refs, unions, unknown ---------------------------------------------------


def test_arrays(lex: Lexicons) -> None:
    assert check(lex, array=[], lenArray=["a", "b"]) == []
    assert check(lex, array=[1, "2", 3.0]) == [
        "record/array/1: must be an integer, not string",
        "record/array/2: must be an integer, not float",
    ]
    assert check(lex, array={"0": 1}) == ["record/array: must be an array, not object"]
    assert check(lex, lenArray=[]) == ["record/lenArray: must have at least 1 items, got 0"]
    assert check(lex, lenArray=["a", "b", "c"]) == [
        "record/lenArray: must have at most 2 items, got 3"
    ]


def test_refs(lex: Lexicons) -> None:
    assert check(lex, ref={"x": 1}, refs=[{"x": 1, "y": 2}]) == []
    # A $type on a ref'd object is not needed and not checked.
    assert check(lex, ref={"x": 1, "$type": f"{NSID}#point"}) == []
    assert check(lex, ref={"y": 1}) == ["record/ref/x: required field is missing"]
    assert check(lex, refs=[{"x": 1}, {"x": "1"}]) == [
        "record/refs/1/x: must be an integer, not string"
    ]


def test_recursive_ref(lex: Lexicons) -> None:
    tree = {"name": "root", "children": [{"name": "a", "children": [{"name": 5}]}]}
    assert check(lex, tree=tree) == [
        "record/tree/children/0/children/0/name: must be a string, not integer"
    ]
    deep: dict[str, Any] = {"name": "leaf"}
    for _ in range(2000):
        deep = {"children": [deep]}
    assert check(lex, tree=deep) == ["record: nested deeper than 128 levels"]


def test_ref_to_record_needs_its_type(lex: Lexicons) -> None:
    assert check(lex, recordRef={"$type": "com.example.other", "n": 1}) == []
    assert check(lex, recordRef={"n": 1}) == [
        'record/recordRef/$type: required field is missing (must be "com.example.other")'
    ]


def test_open_union(lex: Lexicons) -> None:
    point = {"$type": f"{NSID}#point", "x": 1}
    assert check(lex, openUnion=point) == []
    assert check(lex, openUnion={"$type": "com.example.other", "n": 2}) == []
    assert check(lex, openUnion={"$type": "com.example.other", "n": "2"}) == [
        "record/openUnion/n: must be an integer, not string"
    ]
    assert check(lex, openUnion={"$type": f"{NSID}#point", "x": "1"}) == [
        "record/openUnion/x: must be an integer, not string"
    ]
    # A variant this lexicon does not know is accepted (open union), as long as it is data.
    assert check(lex, openUnion={"$type": "com.example.future", "z": [1]}) == []
    assert check(lex, openUnion={"$type": "com.example.future", "z": 0.5}) == [
        "record/openUnion/z: floats are not allowed in atproto data"
    ]
    assert check(lex, openUnion={"x": 1}) == [
        "record/openUnion/$type: required in a union member "
        "(one of com.example.kitchen#point, com.example.other)"
    ]
    assert check(lex, openUnion="x") == ["record/openUnion: must be an object, not string"]
    # An empty open union is like unknown, except that $type is required.
    assert check(lex, emptyUnion={"$type": "com.example.any", "v": 1}) == []
    assert check(lex, emptyUnion={"v": 1}) == [
        "record/emptyUnion/$type: required in a union member (one of (none))"
    ]


def test_union_main_suffix_is_the_same_variant(lex: Lexicons) -> None:
    lexicons = Lexicons.load(
        [
            {
                "lexicon": 1,
                "id": "com.example.holder",
                "defs": {
                    "main": {
                        "type": "object",
                        "properties": {
                            "u": {"type": "union", "refs": ["com.example.shape"], "closed": True}
                        },
                    }
                },
            },
            {
                "lexicon": 1,
                "id": "com.example.shape",
                "defs": {"main": {"type": "object", "properties": {"n": {"type": "integer"}}}},
            },
        ]
    )
    assert lexicons.validate("com.example.holder", {"u": {"$type": "com.example.shape"}}) == []
    assert lexicons.validate("com.example.holder", {"u": {"$type": "com.example.shape#main"}}) == []
    assert lexicons.validate(
        "com.example.holder", {"u": {"$type": "com.example.shape#main", "n": "x"}}
    ) == ["value/u/n: must be an integer, not string"]


def test_closed_union(lex: Lexicons) -> None:
    assert check(lex, closedUnion={"$type": f"{NSID}#point", "x": 1}) == []
    assert check(lex, closedUnion={"$type": "com.example.future"}) == [
        'record/closedUnion/$type: must be one of com.example.kitchen#point, got "com.example.future"'
    ]


def test_unknown(lex: Lexicons) -> None:
    assert check(lex, unknown={}) == []
    assert check(lex, unknown={"$type": "app.bsky.feed.post", "text": "hi", "n": [1]}) == []
    assert check(lex, unknown={"nested": {"$bytes": "AAEC"}, "l": {"$link": CID}}) == []
    assert check(lex, unknown="text") == ["record/unknown: must be an object, not string"]
    assert check(lex, unknown=[1]) == ["record/unknown: must be an object, not array"]
    assert check(lex, unknown=blob()) == [
        "record/unknown: must be a plain object, not a blob, link or bytes"
    ]
    assert check(lex, unknown={"$link": CID}) != []
    assert check(lex, unknown={"f": 1.5}) == [
        "record/unknown/f: floats are not allowed in atproto data"
    ]
    assert check(lex, unknown={"b": {"$type": "blob", "size": 1}}) != []


def test_many_problems_are_all_reported(lex: Lexicons) -> None:
    problems = check(lex, int="x", did="nope", array=[True], ref={})
    assert problems == [
        "record/int: must be an integer, not string",
        "record/did: must be a valid did",
        "record/array/0: must be an integer, not boolean",
        "record/ref/x: required field is missing",
    ]


def test_rkey_check(lex: Lexicons) -> None:
    record = {"$type": NSID, "req": "r"}
    assert lex.validate_record(NSID, record, rkey="3jzfcijpj2z2a") == []
    assert lex.validate_record(NSID, record, rkey="self") == [
        'rkey: "self" does not fit record key type tid'
    ]
    other = {"$type": "com.example.other"}
    assert lex.validate_record("com.example.other", other, rkey="self") == []
    assert lex.validate_record("com.example.other", other, rkey="3jzfcijpj2z2a") != []


def test_validate_named_defs(lex: Lexicons) -> None:
    assert lex.validate(f"{NSID}#point", {"x": 1}) == []
    assert lex.validate(f"{NSID}#point", {"x": None}) == ["value/x: must not be null"]
    assert lex.validate(f"{NSID}#shortString", "abcd") == [
        "value: must be at most 3 bytes (UTF-8), got 4"
    ]
    assert lex.validate(NSID, {"$type": NSID, "req": "r"}) == []
    with pytest.raises(Exception, match="describes no data value"):
        lex.validate(f"{NSID}#demoToken", "x")


def test_grapheme_fast_path_agrees_with_the_grapheme_package() -> None:
    from protocol.lexicon.validators import grapheme_count

    latin1 = [chr(c) for c in range(256)]
    for a in latin1:
        for b in ("\n", "a", "\xad", "\xe9", "\x85", "\r"):
            text = a + b
            assert grapheme_count(text) == grapheme.length(text), repr(text)
    for text in (FAMILY * 2, FLAG_FR + "a", E_ACUTE + "é", THUMB, "क्षि", "日本語", "\r\n\r\n"):
        assert grapheme_count(text) == grapheme.length(text), repr(text)
    assert grapheme_count(FAMILY * 10, until=3) == 3
