"""Loading and checking lexicon documents: interop vectors, our own folder, and every kind of
broken document the loader must reject with a clear one-line LexiconError."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from core.lexicons import load_lexicons
from protocol.errors import ProtocolError
from protocol.lexicon import LexiconError, Lexicons

PLYR_RECORDS = (
    "fm.plyr.track",
    "fm.plyr.like",
    "fm.plyr.comment",
    "fm.plyr.list",
    "fm.plyr.actor.profile",
)


def _interop(shared_dir: Path, name: str) -> list[dict[str, Any]]:
    return json.loads((shared_dir / "reference/interop/lexicon" / name).read_text())


def test_interop_valid_lexicons_load(shared_dir: Path) -> None:
    cases = _interop(shared_dir, "lexicon-valid.json")
    assert cases
    for case in cases:
        lexicons = Lexicons.load([case["lexicon"]])
        assert case["lexicon"]["id"] in lexicons, case["name"]


def test_interop_invalid_lexicons_are_rejected(shared_dir: Path) -> None:
    cases = _interop(shared_dir, "lexicon-invalid.json")
    assert cases
    for case in cases:
        with pytest.raises(LexiconError) as info:
            Lexicons.load([case["lexicon"]])
        message = str(info.value)
        assert "\n" not in message, case["name"]
        assert message, case["name"]


def test_interop_catalog_loads(shared_dir: Path) -> None:
    folder = shared_dir / "reference/interop/lexicon/catalog"
    lexicons = Lexicons.load(folder)
    assert set(lexicons.ids) == {
        "example.lexicon.permissionset",
        "example.lexicon.procedure",
        "example.lexicon.query",
        "example.lexicon.record",
        "example.lexicon.subscription",
    }
    # The procedure refers to app.bsky.actor.defs, which is not part of the catalog.
    assert lexicons.unresolved_refs() == ["app.bsky.actor.defs#preferences"]
    assert lexicons.validate_input("example.lexicon.procedure", {"preferences": {}}) == [
        "input/preferences: cannot be validated: lexicon app.bsky.actor.defs#preferences "
        "is not loaded"
    ]


def test_project_lexicons_load_and_are_self_contained() -> None:
    lexicons = load_lexicons()
    for nsid in PLYR_RECORDS + ("com.atproto.repo.strongRef", "com.atproto.label.defs"):
        assert nsid in lexicons
    for nsid in PLYR_RECORDS:
        assert lexicons.get_def(nsid)["type"] == "record"  # type: ignore[index]
    assert lexicons.unresolved_refs() == []


def test_lexicon_error_is_a_plyr_error() -> None:
    assert issubclass(LexiconError, ProtocolError)  # the CLI reports it as one line


def test_get_def() -> None:
    lexicons = load_lexicons()
    assert lexicons.get_def("fm.plyr.track#featuredArtist")["required"] == ["did"]  # type: ignore[index]
    assert lexicons.get_def("fm.plyr.track") is lexicons.get_def("fm.plyr.track#main")
    assert lexicons.get_def("fm.plyr.track#nope") is None
    assert lexicons.get_def("com.example.nope") is None


# --- broken documents ----------------------------------------------------------------------

BASE: dict[str, Any] = {
    "lexicon": 1,
    "id": "com.example.thing",
    "defs": {
        "main": {
            "type": "record",
            "key": "tid",
            "record": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "maxLength": 10},
                    "other": {"type": "ref", "ref": "#other"},
                },
            },
        },
        "other": {"type": "object", "properties": {"n": {"type": "integer"}}},
    },
}


def _doc(**changes: Any) -> dict[str, Any]:
    """BASE with changes given as "path/to/key" (with / replaced by __) = value (None deletes)."""
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        keys = dotted.split("__")
        node = doc
        for key in keys[:-1]:
            node = node[key]
        if value is None:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return doc


def test_base_document_is_valid() -> None:
    assert (
        Lexicons.load([BASE]).validate_record(
            "com.example.thing", {"$type": "com.example.thing", "name": "x"}
        )
        == []
    )


BROKEN: list[tuple[str, dict[str, Any], str]] = [
    ("not an object", [], "must be a JSON object"),  # type: ignore[list-item]
    ("version 2", _doc(lexicon=2), "lexicon: unsupported lexicon version 2"),
    ("version string", _doc(lexicon="1"), "lexicon: unsupported lexicon version"),
    ("version true", _doc(lexicon=True), "lexicon: unsupported lexicon version"),
    ("no version", _doc(lexicon=None), "lexicon: missing"),
    ("no id", _doc(id=None), "id: missing"),
    ("bad id", _doc(id="not an nsid"), 'id: "not an nsid" is not a valid NSID'),
    ("no defs", _doc(defs=None), "defs: missing"),
    ("empty defs", _doc(defs={}), "at least one definition"),
    ("unknown type", _doc(defs__other__type="float"), 'defs/other: unknown type "float"'),
    ("missing type", _doc(defs__other__type=None), "defs/other: missing type"),
    (
        "record without key",
        _doc(defs__main__key=None),
        "defs/main: a record needs key",
    ),
    ("bad key type", _doc(defs__main__key="uuid"), 'unknown record key type "uuid"'),
    ("bad literal key", _doc(defs__main__key="literal:a/b"), "unknown record key type"),
    (
        "record without record",
        _doc(defs__main__record=None),
        "defs/main: a record needs record",
    ),
    (
        "required not in properties",
        _doc(defs__main__record__required=["name", "nope"]),
        'defs/main/record/required: "nope" is not a defined property',
    ),
    (
        "nullable not in properties",
        _doc(defs__main__record__nullable=["nope"]),
        '"nope" is not a defined property',
    ),
    ("object without properties", _doc(defs__other__properties=None), "missing properties"),
    (
        "bad local ref",
        _doc(defs__main__record__properties__other__ref="#nope"),
        "no definition named nope",
    ),
    (
        "malformed ref",
        _doc(defs__main__record__properties__other__ref="not an nsid#x"),
        "is not a valid NSID",
    ),
    (
        "ref to missing def of a loaded lexicon",
        _doc(defs__main__record__properties__other__ref="com.example.thing#nope"),
        "lexicon com.example.thing has no definition nope",
    ),
    (
        "ref to a token",
        _doc(defs__other={"type": "token"}),
        "reference #other points to a token",
    ),
    (
        "union of a string",
        _doc(
            defs__other={"type": "string"},
            defs__main__record__properties__other={"type": "union", "refs": ["#other"]},
        ),
        "points to a string",
    ),
    (
        "closed empty union",
        _doc(defs__main__record__properties__other={"type": "union", "refs": [], "closed": True}),
        "a closed union needs at least one ref",
    ),
    (
        "primary type not main",
        _doc(defs__x={"type": "query"}),
        "defs/x: a query definition must be named main",
    ),
    ("named unknown", _doc(defs__x={"type": "unknown"}), "defs/x: an unknown cannot be a named"),
    ("named union", _doc(defs__x={"type": "union", "refs": []}), "cannot be a named definition"),
    ("named params", _doc(defs__x={"type": "params", "properties": {}}), "cannot be a named"),
    (
        "token as a field",
        _doc(defs__main__record__properties__t={"type": "token"}),
        "a token cannot be used as an object property",
    ),
    (
        "record inside object",
        _doc(defs__other__properties__r=copy.deepcopy(BASE["defs"]["main"])),
        "a record cannot be used as an object property",
    ),
    (
        "record body not object",
        _doc(defs__main__record={"type": "string"}),
        "must be a schema of type object",
    ),
    (
        "bad format",
        _doc(defs__main__record__properties__name__format="email"),
        'unknown string format "email"',
    ),
    (
        "negative maxLength",
        _doc(defs__main__record__properties__name__maxLength=-1),
        "must be at least 0",
    ),
    (
        "float maxLength",
        _doc(defs__main__record__properties__name__maxLength=1.5),
        "must be an integer",
    ),
    (
        "min above max",
        _doc(defs__main__record__properties__name__minLength=20),
        "minLength 20 is greater than maxLength 10",
    ),
    (
        "const and default",
        _doc(
            defs__main__record__properties__name__const="a",
            defs__main__record__properties__name__default="b",
        ),
        "const and default cannot both be set",
    ),
    (
        "enum not strings",
        _doc(defs__main__record__properties__name__enum=[1]),
        "must be an array of strings",
    ),
    (
        "integer enum of strings",
        _doc(defs__other__properties__n__enum=["a"]),
        "must be an array of integers",
    ),
    ("array without items", _doc(defs__other={"type": "array"}), "an array needs items"),
    (
        "bad accept",
        _doc(defs__other={"type": "blob", "accept": ["audio"]}),
        'bad MIME type pattern "audio"',
    ),
    (
        "partial glob",
        _doc(defs__other={"type": "blob", "accept": ["text/ht*"]}),
        "bad MIME type pattern",
    ),
    ("description not string", _doc(defs__other__description=5), "description: must be a string"),
    (
        "query with input",
        _doc(defs={"main": {"type": "query", "input": {"encoding": "application/json"}}}),
        "a query cannot have input",
    ),
    (
        "object param",
        _doc(
            defs={
                "main": {
                    "type": "query",
                    "parameters": {
                        "type": "params",
                        "properties": {"o": {"type": "object", "properties": {}}},
                    },
                }
            }
        ),
        "an object cannot be used as a query parameter",
    ),
    (
        "output without encoding",
        _doc(
            defs={
                "main": {
                    "type": "query",
                    "output": {"schema": {"type": "object", "properties": {}}},
                }
            }
        ),
        "needs encoding",
    ),
    (
        "output schema a string",
        _doc(
            defs={
                "main": {
                    "type": "query",
                    "output": {"encoding": "application/json", "schema": {"type": "string"}},
                }
            }
        ),
        "a string cannot be used as a body schema",
    ),
    (
        "error name with space",
        _doc(defs={"main": {"type": "query", "errors": [{"name": "Bad Thing"}]}}),
        "needs a name without whitespace",
    ),
    (
        "subscription message not a union",
        _doc(
            defs={
                "main": {
                    "type": "subscription",
                    "message": {"schema": {"type": "object", "properties": {}}},
                }
            }
        ),
        "must be a union",
    ),
    (
        "permission-set without permissions",
        _doc(defs={"main": {"type": "permission-set"}}),
        "needs permissions",
    ),
]


@pytest.mark.parametrize("name,doc,expected", BROKEN, ids=[case[0] for case in BROKEN])
def test_broken_documents_are_rejected(name: str, doc: Any, expected: str) -> None:
    with pytest.raises(LexiconError) as info:
        Lexicons.load([doc])
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_error_names_the_document() -> None:
    with pytest.raises(LexiconError, match=r"^com\.example\.thing: defs/other: unknown type"):
        Lexicons.load([_doc(defs__other__type="float")])


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(LexiconError, match="already loaded"):
        Lexicons.load([BASE, BASE])


def test_cross_document_ref_checked_when_target_loaded() -> None:
    other = {"lexicon": 1, "id": "com.example.other", "defs": {"x": {"type": "token"}}}
    doc = _doc(defs__main__record__properties__other__ref="com.example.other#y")
    with pytest.raises(LexiconError, match="lexicon com.example.other has no definition y"):
        Lexicons.load([doc, other])
    # Without the other document the reference stays open, and data there cannot be checked.
    lexicons = Lexicons.load([doc])
    assert lexicons.unresolved_refs() == ["com.example.other#y"]
    problems = lexicons.validate_record(
        "com.example.thing", {"$type": "com.example.thing", "name": "x", "other": {}}
    )
    assert problems == [
        "record/other: cannot be validated: lexicon com.example.other#y is not loaded"
    ]


def test_add_later_resolves_refs() -> None:
    lexicons = Lexicons.load([_doc(defs__main__record__properties__other__ref="com.example.other")])
    lexicons.add(
        {
            "lexicon": 1,
            "id": "com.example.other",
            "defs": {"main": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        }
    )
    record = {"$type": "com.example.thing", "name": "x", "other": {"n": "1"}}
    assert lexicons.validate_record("com.example.thing", record) == [
        "record/other/n: must be an integer, not string"
    ]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(LexiconError, match="no such lexicon folder"):
        Lexicons.load(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "thing.json").write_text('{"lexicon": 1, "id": ')
    with pytest.raises(LexiconError, match=r"thing\.json: not valid JSON"):
        Lexicons.load(tmp_path)
    (tmp_path / "a" / "thing.json").write_text(json.dumps(_doc(lexicon=2)))
    with pytest.raises(
        LexiconError, match=r"thing\.json \(com\.example\.thing\): lexicon: unsupported"
    ):
        Lexicons.load(tmp_path)
    (tmp_path / "a" / "thing.json").write_text(json.dumps(BASE))
    assert Lexicons.load(tmp_path).ids == ["com.example.thing"]


def test_unknown_schema_requests_raise() -> None:
    lexicons = load_lexicons()
    with pytest.raises(LexiconError, match="no lexicon for record type fm.plyr.nope"):
        lexicons.validate_record("fm.plyr.nope", {})
    with pytest.raises(LexiconError, match="not a record"):
        lexicons.validate_record("com.atproto.repo.strongRef", {})
    with pytest.raises(LexiconError, match="no lexicon definition"):
        lexicons.validate("fm.plyr.track#nope", {})


def test_record_type_must_be_a_bare_nsid() -> None:
    lexicons = load_lexicons()
    with pytest.raises(LexiconError, match="named by its bare NSID"):
        lexicons.validate_record("fm.plyr.track#main", {"$type": "fm.plyr.track"})


def test_loaded_documents_are_private_copies() -> None:
    doc = copy.deepcopy(BASE)
    lexicons = Lexicons.load([doc])
    doc["defs"]["main"]["record"]["properties"]["name"]["maxLength"] = 1
    doc["id"] = "com.example.changed"
    assert (
        lexicons.get_def("com.example.thing#main")["record"]["properties"]["name"][  # type: ignore[index]
            "maxLength"
        ]
        == 10
    )
    record = {"$type": "com.example.thing", "name": "abc"}
    assert lexicons.validate_record("com.example.thing", record) == []


def test_deeply_nested_document_is_rejected() -> None:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(3000):
        schema = {"type": "array", "items": schema}
    doc = {"lexicon": 1, "id": "com.example.deep", "defs": {"main": schema}}
    with pytest.raises(LexiconError, match="nested too deeply"):
        Lexicons.load([doc])
