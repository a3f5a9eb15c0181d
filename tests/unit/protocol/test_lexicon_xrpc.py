"""XRPC endpoint lexicons: query-string parameters (converted to their declared types) and
JSON input/output bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protocol.lexicon import LexiconError, Lexicons

QUERY: dict[str, Any] = {
    "lexicon": 1,
    "id": "com.example.getThings",
    "defs": {
        "main": {
            "type": "query",
            "parameters": {
                "type": "params",
                "required": ["actor"],
                "properties": {
                    "actor": {"type": "string", "format": "at-identifier"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                    "cursor": {"type": "string"},
                    "reverse": {"type": "boolean", "default": False},
                    "tags": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": 5},
                        "maxLength": 3,
                    },
                    "ids": {"type": "array", "items": {"type": "integer"}},
                    "sort": {"type": "string", "enum": ["new", "top"]},
                    "blob": {"type": "unknown"},
                },
            },
            "output": {
                "encoding": "application/json",
                "schema": {
                    "type": "object",
                    "required": ["things"],
                    "properties": {
                        "cursor": {"type": "string"},
                        "things": {"type": "array", "items": {"type": "ref", "ref": "#thing"}},
                    },
                },
            },
            "errors": [{"name": "NotFound"}],
        },
        "thing": {
            "type": "object",
            "required": ["uri"],
            "properties": {"uri": {"type": "string", "format": "at-uri"}},
        },
    },
}

PROCEDURE: dict[str, Any] = {
    "lexicon": 1,
    "id": "com.example.putThing",
    "defs": {
        "main": {
            "type": "procedure",
            "input": {
                "encoding": "application/json",
                "schema": {"type": "ref", "ref": "com.example.getThings#thing"},
            },
            "output": {
                "encoding": "application/json",
                "schema": {"type": "union", "refs": ["#ok", "#queued"], "closed": True},
            },
        },
        "ok": {"type": "object", "properties": {}},
        "queued": {
            "type": "object",
            "required": ["position"],
            "properties": {"position": {"type": "integer"}},
        },
    },
}

BARE: dict[str, Any] = {
    "lexicon": 1,
    "id": "com.example.ping",
    "defs": {"main": {"type": "procedure", "output": {"encoding": "text/plain"}}},
}

URI = "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/fm.plyr.track/3jzfcijpj2z2a"


@pytest.fixture(scope="module")
def lex() -> Lexicons:
    return Lexicons.load([QUERY, PROCEDURE, BARE])


def test_params_are_converted_and_defaulted(lex: Lexicons) -> None:
    params, problems = lex.validate_params(
        "com.example.getThings",
        {"actor": "alice.example.com", "limit": "10", "reverse": "true", "ids": ["1", "-2"]},
    )
    assert problems == []
    assert params == {
        "actor": "alice.example.com",
        "limit": 10,
        "reverse": True,
        "ids": [1, -2],
    }
    params, problems = lex.validate_params("com.example.getThings", {"actor": ["did:plc:abc"]})
    assert problems == []
    assert params == {"actor": "did:plc:abc", "limit": 50, "reverse": False}


def test_params_single_string_for_array(lex: Lexicons) -> None:
    params, problems = lex.validate_params(
        "com.example.getThings", {"actor": "a.b", "tags": "rock", "blob": "{}"}
    )
    assert problems == []
    assert params["tags"] == ["rock"]
    assert params["blob"] == "{}"


def test_params_unknown_names_are_dropped(lex: Lexicons) -> None:
    params, problems = lex.validate_params("com.example.getThings", {"actor": "a.b", "zzz": "1"})
    assert problems == []
    assert "zzz" not in params


@pytest.mark.parametrize(
    "given,problem",
    [
        ({}, "params/actor: required parameter is missing"),
        ({"actor": "not a handle!"}, "params/actor: must be a valid at-identifier"),
        ({"actor": ["a.b", "c.d"]}, "params/actor: given 2 times, expected once"),
        ({"limit": "ten"}, 'params/limit: must be an integer, got "ten"'),
        ({"limit": "1.5"}, 'params/limit: must be an integer, got "1.5"'),
        ({"limit": "0"}, "params/limit: must be at least 1, got 0"),
        ({"limit": "101"}, "params/limit: must be at most 100, got 101"),
        ({"reverse": "yes"}, 'params/reverse: must be true or false, got "yes"'),
        ({"reverse": "1"}, 'params/reverse: must be true or false, got "1"'),
        ({"tags": ["a", "b", "c", "d"]}, "params/tags: must have at most 3 items, got 4"),
        ({"tags": ["toolong"]}, "params/tags/0: must be at most 5 bytes (UTF-8), got 7"),
        ({"ids": ["1", "x"]}, 'params/ids/1: must be an integer, got "x"'),
        ({"sort": "old"}, 'params/sort: must be one of ["new","top"], got "old"'),
    ],
)
def test_param_problems(lex: Lexicons, given: dict[str, Any], problem: str) -> None:
    params = {"actor": "a.b", **given} if "actor" not in given and given else given
    out, problems = lex.validate_params("com.example.getThings", params)
    assert problems == [problem]
    bad_name = problem.split("/")[1].split(":")[0]
    assert bad_name not in out


def test_output_body(lex: Lexicons) -> None:
    good = {"things": [{"uri": URI}], "cursor": "abc"}
    assert lex.validate_output("com.example.getThings", good) == []
    assert lex.validate_output("com.example.getThings", {"things": [{"uri": "x"}]}) == [
        "output/things/0/uri: must be a valid at-uri"
    ]
    assert lex.validate_output("com.example.getThings", {}) == [
        "output/things: required field is missing"
    ]


def test_procedure_bodies(lex: Lexicons) -> None:
    assert lex.validate_input("com.example.putThing", {"uri": URI}) == []
    assert lex.validate_input("com.example.putThing", {"uri": 1}) == [
        "input/uri: must be a string, not integer"
    ]
    assert lex.validate_output("com.example.putThing", {"$type": "com.example.putThing#ok"}) == []
    assert (
        lex.validate_output(
            "com.example.putThing", {"$type": "com.example.putThing#queued", "position": 3}
        )
        == []
    )
    assert lex.validate_output(
        "com.example.putThing", {"$type": "com.example.putThing#queued"}
    ) == ["output/position: required field is missing"]
    assert lex.validate_output("com.example.putThing", {"position": 3}) != []
    # No schema: nothing to check.
    assert lex.validate_output("com.example.ping", "pong") == []
    assert lex.validate_input("com.example.ping", b"anything") == []
    params, problems = lex.validate_params("com.example.ping", {"x": "1"})
    assert (params, problems) == ({}, [])


def test_endpoint_misuse_raises(lex: Lexicons) -> None:
    with pytest.raises(LexiconError, match="no lexicon for endpoint"):
        lex.validate_params("com.example.nope", {})
    with pytest.raises(LexiconError, match="takes no input body"):
        lex.validate_input("com.example.getThings", {})
    with pytest.raises(LexiconError, match="not an XRPC endpoint"):
        lex.validate_params("com.example.getThings#thing", {})


def test_catalog_endpoints(shared_dir: Path) -> None:
    lexicons = Lexicons.load(shared_dir / "reference/interop/lexicon/catalog")
    params, problems = lexicons.validate_params(
        "example.lexicon.query",
        {"stringField": "s", "boolean": "false", "integer": "-4", "array": ["1", "2"]},
    )
    assert problems == []
    assert params == {"stringField": "s", "boolean": False, "integer": -4, "array": [1, 2]}
    _, problems = lexicons.validate_params("example.lexicon.query", {"handle": "nope"})
    assert problems == [
        "params/stringField: required parameter is missing",
        "params/handle: must be a valid handle",
    ]
    assert lexicons.validate_output("example.lexicon.query", {"a": 1, "b": 2}) == []
    assert lexicons.validate_output("example.lexicon.query", {"a": "1"}) == [
        "output/a: must be an integer, not string"
    ]
    _, problems = lexicons.validate_params("example.lexicon.subscription", {"cursor": "12"})
    assert problems == []


SUBSCRIPTION: dict[str, Any] = {
    "lexicon": 1,
    "id": "com.example.subscribe",
    "defs": {
        "main": {
            "type": "subscription",
            "parameters": {"type": "params", "properties": {"cursor": {"type": "integer"}}},
            "message": {"schema": {"type": "union", "refs": ["#event", "#info"]}},
        },
        "event": {
            "type": "object",
            "required": ["seq"],
            "properties": {"seq": {"type": "integer"}},
        },
        "info": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}},
        },
    },
}


def test_subscription_messages() -> None:
    lexicons = Lexicons.load([SUBSCRIPTION, QUERY])
    nsid = "com.example.subscribe"
    # At the top level of a message, the type may come from the frame header instead of $type.
    assert lexicons.validate_message(nsid, {"seq": 5}, "#event") == []
    assert lexicons.validate_message(nsid, {"seq": "5"}, "#event") == [
        "message/seq: must be an integer, not string"
    ]
    assert lexicons.validate_message(nsid, {"$type": f"{nsid}#info", "name": "x"}) == []
    assert lexicons.validate_message(nsid, {"$type": f"{nsid}#info"}) == [
        "message/name: required field is missing"
    ]
    assert lexicons.validate_message(nsid, {"seq": 5}) == [
        "message: its type is unknown (no message type and no $type)"
    ]
    # Open union: a newer message type passes as long as it is data.
    assert lexicons.validate_message(nsid, {"x": 1}, "#identity") == []
    assert lexicons.validate_message(nsid, {"x": 1.5}, "#identity") == [
        "message/x: floats are not allowed in atproto data"
    ]
    assert lexicons.validate_message(nsid, [1], "#event") == [
        "message: must be an object, not array"
    ]
    with pytest.raises(LexiconError, match="has no messages"):
        lexicons.validate_message("com.example.getThings", {})


def test_closed_subscription_rejects_unknown_messages() -> None:
    closed = json.loads(json.dumps(SUBSCRIPTION))
    closed["defs"]["main"]["message"]["schema"]["closed"] = True
    lexicons = Lexicons.load([closed])
    assert lexicons.validate_message("com.example.subscribe", {"seq": 1}, "#event") == []
    assert lexicons.validate_message("com.example.subscribe", {}, "#identity") == [
        'message: unknown message type "com.example.subscribe#identity"'
    ]


def test_catalog_subscription(shared_dir: Path) -> None:
    lexicons = Lexicons.load(shared_dir / "reference/interop/lexicon/catalog")
    nsid = "example.lexicon.subscription"
    assert lexicons.validate_message(nsid, {"seq": 1, "yo": True}, "#yo") == []
    assert lexicons.validate_message(nsid, {"seq": 1}, "#yo") == [
        "message/yo: required field is missing"
    ]
