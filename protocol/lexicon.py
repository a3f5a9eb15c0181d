"""Lexicon schemas: load and check lexicon documents, then validate data against them.

`Lexicons.load(folder)` reads every `*.json` lexicon document below a folder (or takes a list of
already-parsed documents), checks each document against the rules of the Lexicon language (a
broken document raises `LexiconError` naming the file and the problem) and compiles every
definition into a tree of small closures. References are resolved once, at load time, so
validating a record is a single walk over the data with no schema lookups.

Data is given in the JSON form of the atproto data model: `{"$bytes": base64}` for bytes,
`{"$link": cid}` for CID links, `{"$type": "blob", ...}` for blobs. Raw `bytes` values (as a
DAG-CBOR decoder returns them) are also accepted for bytes and CID-link fields.

Validators return a list of problems, each one line starting with the JSON path of the bad value
(`record/features/0/did: must be a valid did`); an empty list means valid. Asking for a schema
that is not loaded is a caller error and raises `LexiconError`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grapheme
import orjson

from protocol.data_model import MAX_NESTING, nesting_depth
from protocol.errors import ProtocolError
from protocol.syntax import is_valid

__all__ = ["LEXICONS_DIR", "LexiconError", "Lexicons"]

LEXICONS_DIR: Path = Path(__file__).resolve().parent.parent / "lexicons"


class LexiconError(ProtocolError):
    """A lexicon document is malformed, or a schema was asked for that is not loaded."""


# A compiled validator: checks `value`, appending "path: problem" lines to `problems`.
Check = Callable[[Any, str, list[str]], None]

_MISSING: Any = object()

_PRIMARY_TYPES = frozenset({"record", "query", "procedure", "subscription", "permission-set"})
# Types describing a data value.
_DATA_TYPES = frozenset(
    ("null", "boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object")
)
# Types that may be the value of a named definition (besides the primary ones, which only `main`
# may hold). The meta types ref/union/unknown and the sub-types params/permission may not.
_NAMED_TYPES = _DATA_TYPES | {"token"}
_FIELD_TYPES = _DATA_TYPES | {"ref", "union", "unknown"}
_PARAM_TYPES = frozenset({"boolean", "integer", "string", "unknown"})
_BODY_SCHEMA_TYPES = frozenset({"object", "ref", "union"})
_KNOWN_TYPES = _PRIMARY_TYPES | _NAMED_TYPES | _FIELD_TYPES | {"params", "permission"}
# What a `ref` may point at, and what a union variant may be.
_REF_TARGETS = _DATA_TYPES | {"record"}
_UNION_TARGETS = frozenset({"object", "record"})
_FORMATS = frozenset(
    "at-identifier at-uri cid datetime did handle nsid tid record-key uri language".split()
)
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_DEF_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_MIME_PATTERN_RE = re.compile(r"(?:\*/\*|[A-Za-z0-9][\w.+-]*/(?:\*|[\w.+-]+))", re.ASCII)
_PARAM_INT_RE = re.compile(r"-?[0-9]{1,19}", re.ASCII)
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)


def _json(value: Any) -> str:
    """A value as it would appear in JSON, shortened for messages."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _a(word: str) -> str:
    """ "a record", "an object"."""
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "object",
        bytes: "bytes",
    }.get(type(value), type(value).__name__)


# --- checking lexicon documents ------------------------------------------------------------


class _DocChecker:
    """Checks one lexicon document's structure; raises LexiconError at the first problem."""

    def __init__(self, doc: Any, label: str) -> None:
        self.doc = doc
        self.label = label
        self.local_refs: list[tuple[str, str]] = []

    def fail(self, where: str, what: str) -> NoReturn:
        raise LexiconError(f"{self.label}: {where}: {what}" if where else f"{self.label}: {what}")

    def run(self) -> None:
        doc = self.doc
        if not isinstance(doc, dict):
            self.fail("", f"a lexicon document must be a JSON object, not {_type_name(doc)}")
        version = doc.get("lexicon", _MISSING)
        if version is _MISSING:
            self.fail("lexicon", "missing (must be 1)")
        if type(version) is not int or version != 1:
            self.fail("lexicon", f"unsupported lexicon version {_json(version)} (must be 1)")
        nsid = doc.get("id", _MISSING)
        if nsid is _MISSING:
            self.fail("id", "missing")
        if not isinstance(nsid, str):
            self.fail("id", f"must be a string NSID, not {_type_name(nsid)}")
        if not is_valid("nsid", nsid):
            self.fail("id", f"{_json(nsid)} is not a valid NSID")
        self._opt_str(doc, "description", "")
        defs = doc.get("defs", _MISSING)
        if defs is _MISSING:
            self.fail("defs", "missing")
        if not isinstance(defs, dict):
            self.fail("defs", f"must be an object, not {_type_name(defs)}")
        if not defs:
            self.fail("defs", "a lexicon needs at least one definition")
        for name, schema in defs.items():
            where = f"defs/{name}"
            if not _DEF_NAME_RE.fullmatch(name):
                self.fail(where, f"invalid definition name {_json(name)}")
            type_ = self._type_of(schema, where)
            if type_ in _PRIMARY_TYPES:
                if name != "main":
                    self.fail(where, f"{_a(type_)} definition must be named main")
            elif type_ not in _NAMED_TYPES:
                self.fail(where, f"{_a(type_)} cannot be a named definition")
            self._check_schema(schema, type_, where)
        for where, name in self.local_refs:
            if name not in defs:
                self.fail(where, f"reference #{name}: no definition named {name} in this lexicon")

    # small field checks

    def _type_of(self, schema: Any, where: str) -> str:
        if not isinstance(schema, dict):
            self.fail(where, f"a schema must be an object, not {_type_name(schema)}")
        type_ = schema.get("type", _MISSING)
        if type_ is _MISSING:
            self.fail(where, "missing type")
        if not isinstance(type_, str):
            self.fail(where, f"type must be a string, not {_type_name(type_)}")
        if type_ not in _KNOWN_TYPES:
            self.fail(where, f"unknown type {_json(type_)}")
        return type_

    def _opt_str(self, node: dict[str, Any], key: str, where: str) -> None:
        if key in node and not isinstance(node[key], str):
            self.fail(_join(where, key), f"must be a string, not {_type_name(node[key])}")

    def _opt_bool(self, node: dict[str, Any], key: str, where: str) -> None:
        if key in node and type(node[key]) is not bool:
            self.fail(_join(where, key), f"must be a boolean, not {_type_name(node[key])}")

    def _opt_int(self, node: dict[str, Any], key: str, where: str, minimum: int | None) -> None:
        if key not in node:
            return
        value = node[key]
        if type(value) is not int:
            self.fail(_join(where, key), f"must be an integer, not {_type_name(value)}")
        if minimum is not None and value < minimum:
            self.fail(_join(where, key), f"must be at least {minimum}, not {value}")

    def _opt_list(
        self, node: dict[str, Any], key: str, where: str, item_type: type, what: str
    ) -> list[Any] | None:
        if key not in node:
            return None
        value = node[key]
        if not isinstance(value, list) or not all(type(item) is item_type for item in value):
            self.fail(_join(where, key), f"must be an array of {what}")
        return value

    def _min_max(self, node: dict[str, Any], low: str, high: str, where: str) -> None:
        if low in node and high in node and node[low] > node[high]:
            self.fail(where, f"{low} {node[low]} is greater than {high} {node[high]}")

    def _ref(self, ref: Any, where: str) -> None:
        if not isinstance(ref, str):
            self.fail(where, f"a reference must be a string, not {_type_name(ref)}")
        nsid, hash_, name = ref.partition("#")
        if hash_ and not _DEF_NAME_RE.fullmatch(name):
            self.fail(where, f"bad reference {_json(ref)}: invalid definition name")
        if not nsid:
            if not hash_:
                self.fail(where, "empty reference")
            self.local_refs.append((where, name))
        elif not is_valid("nsid", nsid):
            self.fail(where, f"bad reference {_json(ref)}: {_json(nsid)} is not a valid NSID")

    # schemas

    def _check_schema(self, schema: dict[str, Any], type_: str, where: str) -> None:
        self._opt_str(schema, "description", where)
        getattr(self, "_check_" + type_.replace("-", "_"))(schema, where)

    def _check_field(self, schema: Any, where: str, allowed: frozenset[str], what: str) -> None:
        type_ = self._type_of(schema, where)
        if type_ not in allowed:
            self.fail(where, f"{_a(type_)} cannot be used {what}")
        self._check_schema(schema, type_, where)

    def _check_null(self, schema: dict[str, Any], where: str) -> None:
        pass

    def _check_boolean(self, schema: dict[str, Any], where: str) -> None:
        self._opt_bool(schema, "default", where)
        self._opt_bool(schema, "const", where)

    def _check_integer(self, schema: dict[str, Any], where: str) -> None:
        for key in ("minimum", "maximum", "default", "const"):
            self._opt_int(schema, key, where, None)
        self._opt_list(schema, "enum", where, int, "integers")
        self._min_max(schema, "minimum", "maximum", where)

    def _check_string(self, schema: dict[str, Any], where: str) -> None:
        fmt = schema.get("format")
        if fmt is not None and fmt not in _FORMATS:
            self.fail(_join(where, "format"), f"unknown string format {_json(fmt)}")
        for key in ("minLength", "maxLength", "minGraphemes", "maxGraphemes"):
            self._opt_int(schema, key, where, 0)
        self._min_max(schema, "minLength", "maxLength", where)
        self._min_max(schema, "minGraphemes", "maxGraphemes", where)
        self._opt_list(schema, "knownValues", where, str, "strings")
        self._opt_list(schema, "enum", where, str, "strings")
        self._opt_str(schema, "default", where)
        self._opt_str(schema, "const", where)
        if "const" in schema and "default" in schema:
            self.fail(where, "const and default cannot both be set")

    def _check_bytes(self, schema: dict[str, Any], where: str) -> None:
        for key in ("minLength", "maxLength"):
            self._opt_int(schema, key, where, 0)
        self._min_max(schema, "minLength", "maxLength", where)

    def _check_cid_link(self, schema: dict[str, Any], where: str) -> None:
        pass

    def _check_blob(self, schema: dict[str, Any], where: str) -> None:
        accept = self._opt_list(schema, "accept", where, str, "MIME type patterns")
        for pattern in accept or ():
            if not _MIME_PATTERN_RE.fullmatch(pattern):
                self.fail(_join(where, "accept"), f"bad MIME type pattern {_json(pattern)}")
        self._opt_int(schema, "maxSize", where, 0)

    def _check_array(self, schema: dict[str, Any], where: str) -> None:
        if "items" not in schema:
            self.fail(where, "an array needs items")
        self._check_field(schema["items"], _join(where, "items"), _FIELD_TYPES, "as array items")
        for key in ("minLength", "maxLength"):
            self._opt_int(schema, key, where, 0)
        self._min_max(schema, "minLength", "maxLength", where)

    def _check_properties(
        self, schema: dict[str, Any], where: str, allowed: frozenset[str], what: str
    ) -> dict[str, Any]:
        props = schema.get("properties", _MISSING)
        if props is _MISSING:
            self.fail(where, "missing properties")
        if not isinstance(props, dict):
            self.fail(_join(where, "properties"), f"must be an object, not {_type_name(props)}")
        for name, prop in props.items():
            if not name:
                self.fail(_join(where, "properties"), "empty property name")
            self._check_field(prop, f"{where}/properties/{name}", allowed, what)
        for key in ("required", "nullable"):
            names = self._opt_list(schema, key, where, str, "property names")
            for name in names or ():
                if name not in props:
                    self.fail(_join(where, key), f"{_json(name)} is not a defined property")
        return props

    def _check_object(self, schema: dict[str, Any], where: str) -> None:
        self._check_properties(schema, where, _FIELD_TYPES, "as an object property")

    def _check_params(self, schema: dict[str, Any], where: str) -> None:
        if "nullable" in schema:
            self.fail(where, "params cannot have nullable")
        props = self._check_properties(
            schema, where, _PARAM_TYPES | {"array"}, "as a query parameter"
        )
        for name, prop in props.items():
            if prop["type"] == "array":
                item_type = prop["items"]["type"]
                if item_type not in _PARAM_TYPES:
                    self.fail(
                        f"{where}/properties/{name}/items",
                        f"{_a(item_type)} cannot be used as a query parameter array item",
                    )

    def _check_ref(self, schema: dict[str, Any], where: str) -> None:
        if "ref" not in schema:
            self.fail(where, "a ref needs ref")
        self._ref(schema["ref"], _join(where, "ref"))

    def _check_union(self, schema: dict[str, Any], where: str) -> None:
        refs = schema.get("refs", _MISSING)
        if refs is _MISSING:
            self.fail(where, "a union needs refs")
        if not isinstance(refs, list):
            self.fail(_join(where, "refs"), f"must be an array, not {_type_name(refs)}")
        for i, ref in enumerate(refs):
            self._ref(ref, f"{where}/refs/{i}")
        self._opt_bool(schema, "closed", where)
        if schema.get("closed") and not refs:
            self.fail(where, "a closed union needs at least one ref")

    def _check_unknown(self, schema: dict[str, Any], where: str) -> None:
        pass

    def _check_token(self, schema: dict[str, Any], where: str) -> None:
        pass

    def _check_record(self, schema: dict[str, Any], where: str) -> None:
        key = schema.get("key", _MISSING)
        if key is _MISSING:
            self.fail(where, "a record needs key (the record key type)")
        if not isinstance(key, str) or not (
            key in ("tid", "nsid", "any")
            or (key.startswith("literal:") and is_valid("record-key", key[8:]))
        ):
            self.fail(
                _join(where, "key"),
                f"unknown record key type {_json(key)} (tid, nsid, any or literal:<key>)",
            )
        if "record" not in schema:
            self.fail(where, "a record needs record (an object schema)")
        record = schema["record"]
        if self._type_of_or_none(record) != "object":
            self.fail(_join(where, "record"), "must be a schema of type object")
        self._check_object(record, _join(where, "record"))
        self._opt_str(record, "description", _join(where, "record"))

    def _type_of_or_none(self, schema: Any) -> Any:
        return schema.get("type") if isinstance(schema, dict) else None

    def _check_parameters(self, schema: dict[str, Any], where: str) -> None:
        if "parameters" in schema:
            params = schema["parameters"]
            if self._type_of_or_none(params) != "params":
                self.fail(_join(where, "parameters"), "must be a schema of type params")
            self._check_schema(params, "params", _join(where, "parameters"))

    def _check_body(self, schema: dict[str, Any], key: str, where: str) -> None:
        if key not in schema:
            return
        body = schema[key]
        where = _join(where, key)
        if not isinstance(body, dict):
            self.fail(where, f"must be an object, not {_type_name(body)}")
        if not isinstance(body.get("encoding"), str) or not body["encoding"]:
            self.fail(where, "needs encoding (a MIME type)")
        self._opt_str(body, "description", where)
        if "schema" in body:
            self._check_field(
                body["schema"], _join(where, "schema"), _BODY_SCHEMA_TYPES, "as a body schema"
            )

    def _check_errors(self, schema: dict[str, Any], where: str) -> None:
        if "errors" not in schema:
            return
        errors = schema["errors"]
        if not isinstance(errors, list):
            self.fail(_join(where, "errors"), "must be an array")
        for i, error in enumerate(errors):
            name = error.get("name") if isinstance(error, dict) else None
            if not isinstance(name, str) or not name or any(c.isspace() for c in name):
                self.fail(f"{where}/errors/{i}", "needs a name without whitespace")
            self._opt_str(error, "description", f"{where}/errors/{i}")

    def _check_query(self, schema: dict[str, Any], where: str) -> None:
        if "input" in schema:
            self.fail(where, "a query cannot have input")
        self._check_parameters(schema, where)
        self._check_body(schema, "output", where)
        self._check_errors(schema, where)

    def _check_procedure(self, schema: dict[str, Any], where: str) -> None:
        self._check_parameters(schema, where)
        self._check_body(schema, "input", where)
        self._check_body(schema, "output", where)
        self._check_errors(schema, where)

    def _check_subscription(self, schema: dict[str, Any], where: str) -> None:
        self._check_parameters(schema, where)
        message = schema.get("message")
        if not isinstance(message, dict) or "schema" not in message:
            self.fail(where, "a subscription needs message.schema")
        msg_where = f"{where}/message/schema"
        if self._type_of_or_none(message["schema"]) != "union":
            self.fail(msg_where, "a subscription message schema must be a union")
        self._check_schema(message["schema"], "union", msg_where)
        self._check_errors(schema, where)

    def _check_permission_set(self, schema: dict[str, Any], where: str) -> None:
        self._opt_str(schema, "title", where)
        self._opt_str(schema, "detail", where)
        for key in ("title:lang", "detail:lang"):
            if key in schema:
                langs = schema[key]
                if not isinstance(langs, dict) or not all(
                    is_valid("language", k) and isinstance(v, str) for k, v in langs.items()
                ):
                    self.fail(_join(where, key), "must map language tags to strings")
        perms = schema.get("permissions", _MISSING)
        if not isinstance(perms, list):
            self.fail(where, "a permission-set needs permissions (an array)")
        for i, perm in enumerate(perms):
            if self._type_of_or_none(perm) != "permission":
                self.fail(f"{where}/permissions/{i}", "must be a schema of type permission")
            self._check_permission(perm, f"{where}/permissions/{i}")

    def _check_permission(self, schema: dict[str, Any], where: str) -> None:
        # Only the common shape is checked: the set of resources and their fields grows over
        # time, and services must ignore what they do not understand.
        resource = schema.get("resource")
        if not isinstance(resource, str) or not resource:
            self.fail(where, "a permission needs resource (a string)")


def _join(where: str, key: str) -> str:
    return f"{where}/{key}" if where else key


# --- data-model checks for values without a schema --------------------------------------------


def _check_link(value: Any, path: str, problems: list[str]) -> bool:
    """A CID link: `{"$link": "<cid>"}` in JSON, or the CID's bytes from a CBOR decoder."""
    if type(value) is dict:
        link = value.get("$link")
        if len(value) == 1 and is_valid("cid", link):
            return True
    elif type(value) is bytes:
        # Binary CID as DAG-CBOR decoders hand it out; the 0x00 multibase prefix that CBOR
        # tag 42 carries is tolerated.
        if _is_binary_cid(value[1:] if value[:1] == b"\x00" else value):
            return True
    problems.append(f'{path}: must be a CID link ({{"$link": cid}})')
    return False


def _is_binary_cid(raw: bytes) -> bool:
    """CIDv1: version 1, codec varint, then a multihash whose length matches the digest."""
    if raw[:1] != b"\x01":
        return False
    pos = 1
    numbers = []
    for _ in range(3):  # codec, hash function, digest length
        number = shift = 0
        while True:
            if pos >= len(raw) or shift > 56:
                return False
            byte = raw[pos]
            pos += 1
            number |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        numbers.append(number)
    return numbers[2] == len(raw) - pos and numbers[2] > 0


def _bytes_length(value: Any) -> int | None:
    """Length of a bytes value (`{"$bytes": base64}` or raw bytes), None when malformed."""
    if type(value) is bytes:
        return len(value)
    if type(value) is not dict or len(value) != 1:
        return None
    text = value.get("$bytes")
    if not isinstance(text, str) or not _BASE64_RE.fullmatch(text):
        return None
    try:
        return len(base64.b64decode(text + "=" * (-len(text) % 4), validate=True))
    except (binascii.Error, ValueError):
        return None


def _check_blob_shape(value: Any, path: str, problems: list[str]) -> tuple[str, int | None] | None:
    """Checks a blob reference; returns (mimeType, size or None for legacy blobs) when valid."""
    if type(value) is not dict:
        problems.append(f"{path}: must be a blob, not {_type_name(value)}")
        return None
    start = len(problems)
    if "$type" in value:
        if value["$type"] != "blob":
            problems.append(f'{path}/$type: must be "blob"')
            return None
        _check_link(value.get("ref"), f"{path}/ref", problems)
        size = value.get("size")
        if type(size) is not int or size <= 0:
            problems.append(f"{path}/size: must be a positive integer")
    elif "cid" in value:
        # Legacy blob reference: a CID string and a MIME type, no size.
        if not is_valid("cid", value["cid"]):
            problems.append(f"{path}/cid: must be a valid cid")
        size = None
    else:
        problems.append(f'{path}: must be a blob (an object with $type "blob")')
        return None
    mime = value.get("mimeType")
    if not isinstance(mime, str) or not mime:
        problems.append(f"{path}/mimeType: must be a non-empty string")
        return None
    if len(problems) != start:
        return None
    return mime, size


def _check_data(value: Any, path: str, problems: list[str]) -> None:
    """Checks that a value outside any schema is valid atproto data (no floats, well-formed
    $link/$bytes/blob objects, 64-bit integers)."""
    t = type(value)
    if t is str or t is bool or value is None or t is bytes:
        return
    if t is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            problems.append(f"{path}: integer out of the 64-bit range")
        return
    if t is list:
        for i, item in enumerate(value):
            _check_data(item, f"{path}/{i}", problems)
        return
    if t is dict:
        if "$link" in value:
            _check_link(value, path, problems)
            return
        if "$bytes" in value:
            if _bytes_length(value) is None:
                problems.append(f'{path}: must be bytes ({{"$bytes": base64}})')
            return
        type_ = value.get("$type", _MISSING)
        if type_ == "blob":
            _check_blob_shape(value, path, problems)
            return
        if type_ is not _MISSING and (not isinstance(type_, str) or not type_):
            problems.append(f"{path}/$type: must be a non-empty string")
        for key, item in value.items():
            if type(key) is not str:
                problems.append(f"{path}: object keys must be strings")
            else:
                _check_data(item, f"{path}/{key}", problems)
        return
    if t is float:
        problems.append(f"{path}: floats are not allowed in atproto data")
        return
    problems.append(f"{path}: {t.__name__} is not an atproto data value")


# --- compiled validators -----------------------------------------------------------------


def _compile_null(schema: dict[str, Any]) -> Check:
    def check(value: Any, path: str, problems: list[str]) -> None:
        if value is not None:
            problems.append(f"{path}: must be null, not {_type_name(value)}")

    return check


def _compile_boolean(schema: dict[str, Any]) -> Check:
    const = schema.get("const")

    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not bool:
            problems.append(f"{path}: must be a boolean, not {_type_name(value)}")
        elif const is not None and value is not const:
            problems.append(f"{path}: must be {_json(const)}")

    return check


def _compile_integer(schema: dict[str, Any]) -> Check:
    const = schema.get("const")
    enum = frozenset(schema["enum"]) if "enum" in schema else None
    enum_text = _json(schema.get("enum"))
    low = schema.get("minimum", _INT64_MIN)
    high = schema.get("maximum", _INT64_MAX)
    low_msg = f"must be at least {low}" if "minimum" in schema else "is below the 64-bit range"
    high_msg = f"must be at most {high}" if "maximum" in schema else "is above the 64-bit range"

    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not int:
            problems.append(f"{path}: must be an integer, not {_type_name(value)}")
            return
        if value < low or value < _INT64_MIN:
            problems.append(f"{path}: {low_msg}, got {value}")
        elif value > high or value > _INT64_MAX:
            problems.append(f"{path}: {high_msg}, got {value}")
        if const is not None and value != const:
            problems.append(f"{path}: must be {const}, got {value}")
        if enum is not None and value not in enum:
            problems.append(f"{path}: must be one of {enum_text}, got {value}")

    return check


def _grapheme_count(text: str, until: int | None = None) -> int:
    """Extended grapheme clusters in `text` (the `grapheme` package: ZWJ sequences, flags,
    modifiers and combining marks count as one). `until` stops counting once reached."""
    # Latin-1 has no combining marks, joiners or regional indicators: every character is its
    # own cluster except that CR LF is one. This skips the slow count for most Western text.
    if not text.isascii():
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            return grapheme.length(text, until)
    return len(text) - text.count("\r\n")


def _compile_string(schema: dict[str, Any]) -> Check:
    fmt = schema.get("format")
    const = schema.get("const")
    enum = frozenset(schema["enum"]) if "enum" in schema else None
    enum_text = _json(schema.get("enum"))
    min_len = schema.get("minLength")
    max_len = schema.get("maxLength")
    min_g = schema.get("minGraphemes")
    max_g = schema.get("maxGraphemes")
    sized = min_len is not None or max_len is not None

    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not str:
            problems.append(f"{path}: must be a string, not {_type_name(value)}")
            return
        if sized:
            # isascii() is O(1) in CPython; only non-ASCII text needs encoding to count bytes.
            if value.isascii():
                size = len(value)
            else:
                try:
                    size = len(value.encode("utf-8"))
                except UnicodeEncodeError:
                    problems.append(f"{path}: must be valid Unicode (lone surrogate)")
                    return
            if max_len is not None and size > max_len:
                problems.append(f"{path}: must be at most {max_len} bytes (UTF-8), got {size}")
            elif min_len is not None and size < min_len:
                problems.append(f"{path}: must be at least {min_len} bytes (UTF-8), got {size}")
        # A string has no more clusters than code points, so short strings skip the count.
        if max_g is not None and len(value) > max_g:
            count = _grapheme_count(value, max_g + 1)
            if count > max_g:
                problems.append(f"{path}: must be at most {max_g} graphemes, got more")
        if min_g is not None:
            count = _grapheme_count(value, min_g)
            if count < min_g:
                problems.append(f"{path}: must be at least {min_g} graphemes, got {count}")
        if const is not None and value != const:
            problems.append(f"{path}: must be {_json(const)}")
        if enum is not None and value not in enum:
            problems.append(f"{path}: must be one of {enum_text}, got {_json(value)}")
        if fmt is not None and not is_valid(fmt, value):
            problems.append(f"{path}: must be a valid {fmt}")

    return check


def _compile_bytes(schema: dict[str, Any]) -> Check:
    min_len = schema.get("minLength")
    max_len = schema.get("maxLength")

    def check(value: Any, path: str, problems: list[str]) -> None:
        size = _bytes_length(value)
        if size is None:
            problems.append(f'{path}: must be bytes ({{"$bytes": base64}})')
        elif max_len is not None and size > max_len:
            problems.append(f"{path}: must be at most {max_len} bytes, got {size}")
        elif min_len is not None and size < min_len:
            problems.append(f"{path}: must be at least {min_len} bytes, got {size}")

    return check


def _compile_cid_link(schema: dict[str, Any]) -> Check:
    def check(value: Any, path: str, problems: list[str]) -> None:
        _check_link(value, path, problems)

    return check


def _mime_matcher(accept: list[str]) -> Callable[[str], bool]:
    if "*/*" in accept:
        return lambda mime: True
    exact = frozenset(p.lower() for p in accept if not p.endswith("/*"))
    prefixes = tuple(p[:-1].lower() for p in accept if p.endswith("/*"))

    def matches(mime: str) -> bool:
        mime = mime.partition(";")[0].strip().lower()
        return mime in exact or (mime.startswith(prefixes) and not mime.endswith("/"))

    return matches


def _compile_blob(schema: dict[str, Any]) -> Check:
    accept = schema.get("accept")
    matches = _mime_matcher(accept) if accept is not None else None
    accept_text = ", ".join(accept or ())
    max_size = schema.get("maxSize")

    def check(value: Any, path: str, problems: list[str]) -> None:
        shape = _check_blob_shape(value, path, problems)
        if shape is None:
            return
        mime, size = shape
        if matches is not None and not matches(mime):
            problems.append(
                f"{path}/mimeType: {mime[:100]} is not accepted (accepts {accept_text})"
            )
        if max_size is not None and size is not None and size > max_size:
            problems.append(f"{path}/size: must be at most {max_size} bytes, got {size}")

    return check


def _compile_unknown(schema: dict[str, Any]) -> Check:
    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not dict:
            problems.append(f"{path}: must be an object, not {_type_name(value)}")
        elif value.get("$type") == "blob" or "$link" in value or "$bytes" in value:
            problems.append(f"{path}: must be a plain object, not a blob, link or bytes")
        else:
            _check_data(value, path, problems)

    return check


def _compile_array(schema: dict[str, Any], items: Check) -> Check:
    min_len = schema.get("minLength")
    max_len = schema.get("maxLength")

    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not list:
            problems.append(f"{path}: must be an array, not {_type_name(value)}")
            return
        if max_len is not None and len(value) > max_len:
            problems.append(f"{path}: must have at most {max_len} items, got {len(value)}")
        elif min_len is not None and len(value) < min_len:
            problems.append(f"{path}: must have at least {min_len} items, got {len(value)}")
        for i, item in enumerate(value):
            items(item, f"{path}/{i}", problems)

    return check


def _compile_object_check(
    props: dict[str, Check], required: tuple[str, ...], nullable: frozenset[str]
) -> Check:
    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not dict:
            problems.append(f"{path}: must be an object, not {_type_name(value)}")
            return
        for key in required:
            if key not in value:
                problems.append(f"{path}/{key}: required field is missing")
        for key, item in value.items():
            sub = props.get(key)
            if sub is None:
                # Fields the schema does not know are allowed (schemas evolve), but must still
                # be valid atproto data. "$"-prefixed fields belong to the data model.
                if type(key) is not str or not key.startswith("$"):
                    _check_data(item, f"{path}/{key}", problems)
            elif item is None:
                if key not in nullable:
                    problems.append(f"{path}/{key}: must not be null")
            else:
                sub(item, f"{path}/{key}", problems)

    return check


def _compile_record_check(nsid: str, body: Check) -> Check:
    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not dict:
            problems.append(f"{path}: must be an object, not {_type_name(value)}")
            return
        type_ = value.get("$type", _MISSING)
        if type_ is _MISSING:
            problems.append(f"{path}/$type: required field is missing (must be {_json(nsid)})")
        elif type_ != nsid:
            problems.append(f"{path}/$type: must be {_json(nsid)}, got {_json(type_)}")
        body(value, path, problems)

    return check


def _compile_union(variants: dict[str, Check], closed: bool, names: list[str]) -> Check:
    names_text = ", ".join(names) or "(none)"

    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not dict:
            problems.append(f"{path}: must be an object, not {_type_name(value)}")
            return
        type_ = value.get("$type")
        if type(type_) is not str or not type_:
            problems.append(f"{path}/$type: required in a union member (one of {names_text})")
            return
        sub = variants.get(type_)
        if sub is not None:
            sub(value, path, problems)
        elif closed:
            problems.append(f"{path}/$type: must be one of {names_text}, got {_json(type_)}")
        else:
            # Open union: a variant this schema version does not know is fine, as data.
            _check_data(value, path, problems)

    return check


def _accept_anything(value: Any, path: str, problems: list[str]) -> None:
    pass


def _missing_schema(ref: str) -> Check:
    def check(value: Any, path: str, problems: list[str]) -> None:
        problems.append(f"{path}: cannot be validated: lexicon {ref} is not loaded")

    return check


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    kind: str  # boolean, integer, string or unknown (for arrays: of the items)
    is_array: bool
    required: bool
    default: Any
    check: Check


@dataclass(frozen=True, slots=True)
class _Endpoint:
    type: str
    params: tuple[_Param, ...]
    input: Check | None
    output: Check | None
    # Subscriptions: message variants by `$type` value, and whether the union is closed.
    messages: dict[str, Check] | None = None
    closed: bool = False


# --- the registry --------------------------------------------------------------------------


class Lexicons:
    """A set of lexicon documents, checked and compiled, that data can be validated against."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, Any]] = {}
        self._labels: dict[str, str] = {}
        self._checks: dict[str, Check] = {}
        self._building: dict[str, list[Check]] = {}
        self._records: dict[str, tuple[Check, str]] = {}
        self._endpoints: dict[str, _Endpoint] = {}

    @classmethod
    def load(cls, source: str | Path | Iterable[Mapping[str, Any]]) -> Lexicons:
        """Loads a folder of lexicon documents (all `*.json` below it) or a list of documents,
        checks them and compiles them. Raises LexiconError for any broken document."""
        lexicons = cls()
        if isinstance(source, str | Path):
            folder = Path(source)
            if not folder.is_dir():
                raise LexiconError(f"{folder}: no such lexicon folder")
            for path in sorted(folder.rglob("*.json")):
                lexicons.add(_read_document(path), label=str(path))
        else:
            for doc in source:
                lexicons.add(doc)  # type: ignore[arg-type]
        lexicons.compile()
        return lexicons

    def add(self, doc: dict[str, Any], label: str | None = None) -> None:
        """Adds one lexicon document after checking it. `label` names it in error messages."""
        doc_id = doc.get("id") if isinstance(doc, dict) else None
        name = label or (doc_id if isinstance(doc_id, str) else "lexicon document")
        if label and isinstance(doc_id, str):
            name = f"{label} ({doc_id})"
        try:
            _DocChecker(doc, name).run()
        except RecursionError:
            raise LexiconError(f"{name}: schemas nested too deeply") from None
        assert isinstance(doc_id, str)  # the checker has failed any document without one
        if doc_id in self._docs:
            raise LexiconError(
                f"{name}: lexicon {doc_id} is already loaded from {self._labels[doc_id]}"
            )
        # A private copy: the caller changing its dict later must not desync the compiled checks.
        self._docs[doc_id] = copy.deepcopy(doc)
        self._labels[doc_id] = name
        # Compiled checks may have resolved a reference to this document as "not loaded".
        self._checks.clear()
        self._records.clear()
        self._endpoints.clear()

    def compile(self) -> None:
        """Resolves every reference and compiles every definition now (instead of on first
        use). Raises LexiconError for references to missing or unusable definitions."""
        for doc_id, doc in self._docs.items():
            for name, schema in doc["defs"].items():
                type_ = schema["type"]
                if type_ == "record":
                    self._record(doc_id)
                elif type_ in ("query", "procedure", "subscription"):
                    self._endpoint(doc_id)
                elif type_ in _NAMED_TYPES and type_ != "token":
                    self._def_check(f"{doc_id}#{name}", doc_id, f"defs/{name}")

    @property
    def ids(self) -> list[str]:
        """NSIDs of the loaded documents."""
        return list(self._docs)

    def __contains__(self, nsid: object) -> bool:
        return nsid in self._docs

    def get_def(self, ref: str) -> dict[str, Any] | None:
        """The definition named by `nsid` (its main) or `nsid#name`, or None."""
        nsid, _, name = ref.partition("#")
        doc = self._docs.get(nsid)
        if doc is None:
            return None
        return doc["defs"].get(name or "main")

    def unresolved_refs(self) -> list[str]:
        """References (`nsid#name`) to documents that are not loaded, sorted."""
        found: set[str] = set()
        for doc_id, doc in self._docs.items():
            for ref in _refs_in(doc["defs"]):
                full = _full_ref(ref, doc_id)
                if full.partition("#")[0] not in self._docs:
                    found.add(full)
        return sorted(found)

    # validation entry points

    def validate_record(self, nsid: str, value: Any, rkey: str | None = None) -> list[str]:
        """Problems with `value` as a record of collection `nsid` (empty when valid). With
        `rkey`, also checks that the record key fits the lexicon's key type."""
        entry = self._records.get(nsid)
        if entry is None:
            entry = self._record(nsid)
        check, key_type = entry
        problems: list[str] = []
        if nesting_depth(value) > MAX_NESTING:
            problems.append(f"record: nested deeper than {MAX_NESTING} levels")
        else:
            try:
                check(value, "record", problems)
            except RecursionError:
                problems.append("record: nested too deeply")
        if rkey is not None and not _rkey_fits(key_type, rkey):
            problems.append(f"rkey: {_json(rkey)} does not fit record key type {key_type}")
        return problems

    def validate(self, ref: str, value: Any) -> list[str]:
        """Problems with `value` against any data definition (`nsid` or `nsid#name`)."""
        nsid, _, name = ref.partition("#")
        schema = self.get_def(ref)
        if schema is None:
            raise LexiconError(f"no lexicon definition {ref} is loaded")
        type_ = schema["type"]
        if type_ == "record":
            return self.validate_record(nsid, value)
        if type_ not in _NAMED_TYPES or type_ == "token":
            raise LexiconError(f"{ref} is {_a(type_)}, which describes no data value")
        check = self._def_check(_full_ref(ref, nsid), nsid, f"defs/{name or 'main'}")
        return _run(check, value, "value")

    def validate_params(
        self, nsid: str, params: Mapping[str, str | list[str]]
    ) -> tuple[dict[str, Any], list[str]]:
        """Checks the query-string parameters of endpoint `nsid`, converting the strings to
        the declared types and filling in defaults. Returns (converted parameters, problems);
        parameters the lexicon does not declare, and invalid ones, are left out."""
        endpoint = self._endpoint_of(nsid)
        out: dict[str, Any] = {}
        problems: list[str] = []
        for param in endpoint.params:
            raw = params.get(param.name)
            path = f"params/{param.name}"
            if raw is None or raw == []:
                if param.default is not _MISSING:
                    out[param.name] = copy.copy(param.default)
                elif param.required:
                    problems.append(f"{path}: required parameter is missing")
                continue
            if param.is_array:
                raws = [raw] if isinstance(raw, str) else list(raw)
                start = len(problems)
                value: Any = [
                    _coerce_param(param.kind, item, f"{path}/{i}", problems)
                    for i, item in enumerate(raws)
                ]
            else:
                if not isinstance(raw, str):
                    if len(raw) != 1:
                        problems.append(f"{path}: given {len(raw)} times, expected once")
                        continue
                    raw = raw[0]
                start = len(problems)
                value = _coerce_param(param.kind, raw, path, problems)
            if len(problems) == start:
                param.check(value, path, problems)
            if len(problems) == start:
                out[param.name] = value
        return out, problems

    def validate_input(self, nsid: str, body: Any) -> list[str]:
        """Problems with a JSON request body for procedure `nsid` (empty when the lexicon
        gives no input schema)."""
        endpoint = self._endpoint_of(nsid)
        if endpoint.type != "procedure":
            raise LexiconError(f"{nsid} is {_a(endpoint.type)}, which takes no input body")
        return _run(endpoint.input, body, "input") if endpoint.input else []

    def validate_output(self, nsid: str, body: Any) -> list[str]:
        """Problems with a JSON response body of query or procedure `nsid` (empty when the
        lexicon gives no output schema)."""
        endpoint = self._endpoint_of(nsid)
        if endpoint.type == "subscription":
            raise LexiconError(f"{nsid} is a subscription, which has no output body")
        return _run(endpoint.output, body, "output") if endpoint.output else []

    def validate_message(self, nsid: str, body: Any, message_type: str | None = None) -> list[str]:
        """Problems with one message of subscription `nsid`. The variant comes from
        `message_type` (the frame header's type, like "#commit") or else the body's `$type`:
        at the top level of a message `$type` is optional."""
        endpoint = self._endpoint_of(nsid)
        if endpoint.messages is None:
            raise LexiconError(f"{nsid} is {_a(endpoint.type)}, which has no messages")
        if type(body) is not dict:
            return [f"message: must be an object, not {_type_name(body)}"]
        type_ = message_type if message_type is not None else body.get("$type")
        if not isinstance(type_, str) or not type_:
            return ["message: its type is unknown (no message type and no $type)"]
        if type_.startswith("#"):
            type_ = nsid + type_
        check = endpoint.messages.get(type_)
        if check is not None:
            return _run(check, body, "message")
        if endpoint.closed:
            return [f"message: unknown message type {_json(type_)}"]
        # Open union: messages of a type this schema does not know yet are fine, as data.
        return _run(_check_data, body, "message")

    # compilation

    def _fail(self, doc_id: str, where: str, what: str) -> NoReturn:
        raise LexiconError(f"{self._labels.get(doc_id, doc_id)}: {where}: {what}")

    def _record(self, nsid: str) -> tuple[Check, str]:
        if "#" in nsid:
            raise LexiconError(f"{nsid}: a record type is named by its bare NSID")
        schema = self.get_def(nsid)
        if schema is None:
            raise LexiconError(f"no lexicon for record type {nsid} is loaded")
        if schema["type"] != "record":
            raise LexiconError(f"{nsid} is {_a(schema['type'])}, not a record")
        entry = (self._def_check(f"{nsid}#main", nsid, "defs/main"), schema["key"])
        self._records[nsid] = entry
        return entry

    def _endpoint_of(self, nsid: str) -> _Endpoint:
        endpoint = self._endpoints.get(nsid)
        if endpoint is None:
            schema = self.get_def(nsid)
            if schema is None:
                raise LexiconError(f"no lexicon for endpoint {nsid} is loaded")
            if schema["type"] not in ("query", "procedure", "subscription"):
                raise LexiconError(f"{nsid} is {_a(schema['type'])}, not an XRPC endpoint")
            endpoint = self._endpoint(nsid)
        return endpoint

    def _endpoint(self, nsid: str) -> _Endpoint:
        schema = self._docs[nsid]["defs"]["main"]
        params: list[_Param] = []
        p_schema = schema.get("parameters") or {}
        required = set(p_schema.get("required", ()))
        for name, prop in p_schema.get("properties", {}).items():
            is_array = prop["type"] == "array"
            kind = prop["items"]["type"] if is_array else prop["type"]
            where = f"defs/main/parameters/properties/{name}"
            if kind != "unknown":
                check = self._field(prop, nsid, where)
            elif is_array:
                # An `unknown` parameter arrives as a plain string: nothing to check in it.
                check = _compile_array(prop, _accept_anything)
            else:
                check = _accept_anything
            params.append(
                _Param(
                    name=name,
                    kind=kind,
                    is_array=is_array,
                    required=name in required,
                    default=prop.get("default", _MISSING),
                    check=check,
                )
            )
        bodies: dict[str, Check | None] = {}
        for key in ("input", "output"):
            body = schema.get(key)
            bodies[key] = (
                self._field(body["schema"], nsid, f"defs/main/{key}/schema")
                if body and "schema" in body
                else None
            )
        messages = None
        message = schema.get("message")
        if message is not None:
            messages, _ = self._union_variants(message["schema"], nsid, "defs/main/message/schema")
        endpoint = _Endpoint(
            schema["type"],
            tuple(params),
            bodies["input"],
            bodies["output"],
            messages,
            bool(message and message["schema"].get("closed")),
        )
        self._endpoints[nsid] = endpoint
        return endpoint

    def _def_check(self, full: str, doc_id: str, where: str) -> Check:
        """The compiled check of a named definition, built once; recursive definitions get a
        trampoline to the check under construction."""
        check = self._checks.get(full)
        if check is not None:
            return check
        pending = self._building.get(full)
        if pending is not None:

            def trampoline(value: Any, path: str, problems: list[str]) -> None:
                pending[0](value, path, problems)

            return trampoline
        nsid, _, name = full.partition("#")
        schema = self._docs[nsid]["defs"][name]
        holder: list[Check] = []
        self._building[full] = holder
        try:
            if schema["type"] == "record":
                body = self._object(schema["record"], nsid, f"{where}/record")
                check = _compile_record_check(nsid, body)
            else:
                check = self._field(schema, nsid, where)
        finally:
            del self._building[full]
        holder.append(check)
        self._checks[full] = check
        return check

    def _resolve(self, ref: str, doc_id: str, where: str, allowed: frozenset[str]) -> Check:
        full = _full_ref(ref, doc_id)
        nsid, _, name = full.partition("#")
        doc = self._docs.get(nsid)
        if doc is None:
            # Another lexicon may be added later; until then data here cannot be checked.
            return _missing_schema(full)
        target = doc["defs"].get(name)
        if target is None:
            self._fail(doc_id, where, f"reference {ref}: lexicon {nsid} has no definition {name}")
        if target["type"] not in allowed:
            self._fail(doc_id, where, f"reference {ref} points to {_a(target['type'])}")
        return self._def_check(full, nsid, f"defs/{name}")

    def _object(self, schema: dict[str, Any], doc_id: str, where: str) -> Check:
        props = {
            name: self._field(prop, doc_id, f"{where}/properties/{name}")
            for name, prop in schema["properties"].items()
        }
        nullable = set(schema.get("nullable", ()))
        nullable.update(k for k, prop in schema["properties"].items() if prop["type"] == "null")
        return _compile_object_check(props, tuple(schema.get("required", ())), frozenset(nullable))

    def _union_variants(
        self, schema: dict[str, Any], doc_id: str, where: str
    ) -> tuple[dict[str, Check], list[str]]:
        """A union's checks by the `$type` values that select them, and the variant names."""
        variants: dict[str, Check] = {}
        for i, ref in enumerate(schema["refs"]):
            check = self._resolve(ref, doc_id, f"{where}/refs/{i}", _UNION_TARGETS)
            full = _full_ref(ref, doc_id)
            variants[full] = check
            # `$type` names a main definition by its bare NSID; "#main" is tolerated.
            if full.endswith("#main"):
                variants[full[:-5]] = check
        return variants, [_type_value(_full_ref(ref, doc_id)) for ref in schema["refs"]]

    def _field(self, schema: dict[str, Any], doc_id: str, where: str) -> Check:
        type_ = schema["type"]
        if type_ == "object":
            return self._object(schema, doc_id, where)
        if type_ == "array":
            return _compile_array(schema, self._field(schema["items"], doc_id, f"{where}/items"))
        if type_ == "ref":
            return self._resolve(schema["ref"], doc_id, f"{where}/ref", _REF_TARGETS)
        if type_ == "union":
            variants, names = self._union_variants(schema, doc_id, where)
            return _compile_union(variants, bool(schema.get("closed")), names)
        compile_simple = _SIMPLE_COMPILERS.get(type_)
        if compile_simple is None:
            self._fail(doc_id, where, f"{_a(type_)} cannot be used as a data field")
        return compile_simple(schema)


_SIMPLE_COMPILERS: dict[str, Callable[[dict[str, Any]], Check]] = {
    "null": _compile_null,
    "boolean": _compile_boolean,
    "integer": _compile_integer,
    "string": _compile_string,
    "bytes": _compile_bytes,
    "cid-link": _compile_cid_link,
    "blob": _compile_blob,
    "unknown": _compile_unknown,
}


def _run(check: Check, value: Any, root: str) -> list[str]:
    problems: list[str] = []
    try:
        check(value, root, problems)
    except RecursionError:
        problems.append(f"{root}: nested too deeply")
    return problems


def _full_ref(ref: str, doc_id: str) -> str:
    """`#name` -> `doc_id#name`, `nsid` -> `nsid#main`, `nsid#name` unchanged."""
    if ref.startswith("#"):
        return doc_id + ref
    return ref if "#" in ref else ref + "#main"


def _type_value(full: str) -> str:
    return full[:-5] if full.endswith("#main") else full


def _refs_in(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        if node.get("type") == "ref" and isinstance(node.get("ref"), str):
            yield node["ref"]
        if node.get("type") == "union" and isinstance(node.get("refs"), list):
            yield from node["refs"]
        for value in node.values():
            yield from _refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs_in(value)


def _rkey_fits(key_type: str, rkey: str) -> bool:
    if key_type == "tid":
        return is_valid("tid", rkey)
    if key_type == "nsid":
        return is_valid("nsid", rkey)
    if key_type.startswith("literal:"):
        return rkey == key_type[8:]
    return is_valid("record-key", rkey)


def _coerce_param(kind: str, raw: Any, path: str, problems: list[str]) -> Any:
    """Converts one query-string value to the parameter's declared type."""
    if not isinstance(raw, str):
        problems.append(f"{path}: must be a string from the query string")
        return None
    if kind == "integer":
        if _PARAM_INT_RE.fullmatch(raw):
            return int(raw)
        problems.append(f"{path}: must be an integer, got {_json(raw)}")
        return None
    if kind == "boolean":
        if raw == "true":
            return True
        if raw == "false":
            return False
        problems.append(f"{path}: must be true or false, got {_json(raw)}")
        return None
    return raw


def _read_document(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LexiconError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise LexiconError(f"{path}: not valid JSON ({exc})") from None
