"""Checking lexicon documents against the rules of the Lexicon language, before any of them is
compiled: a broken document raises `LexiconError` naming the file, the place and the problem."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import orjson

from protocol.lexicon.common import MISSING, LexiconError, json_preview, type_name, with_article
from protocol.syntax import is_valid

_PRIMARY_TYPES = frozenset({"record", "query", "procedure", "subscription", "permission-set"})
# Types describing a data value.
_DATA_TYPES = frozenset(
    ("null", "boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object")
)
# Types that may be the value of a named definition (besides the primary ones, which only `main`
# may hold). The meta types ref/union/unknown and the sub-types params/permission may not.
NAMED_TYPES = _DATA_TYPES | {"token"}
_FIELD_TYPES = _DATA_TYPES | {"ref", "union", "unknown"}
_PARAM_TYPES = frozenset({"boolean", "integer", "string", "unknown"})
_BODY_SCHEMA_TYPES = frozenset({"object", "ref", "union"})
_KNOWN_TYPES = _PRIMARY_TYPES | NAMED_TYPES | _FIELD_TYPES | {"params", "permission"}
# What a `ref` may point at, and what a union variant may be.
REF_TARGETS = _DATA_TYPES | {"record"}
UNION_TARGETS = frozenset({"object", "record"})
_FORMATS = frozenset(
    "at-identifier at-uri cid datetime did handle nsid tid record-key uri language".split()
)
_DEF_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_MIME_PATTERN_RE = re.compile(r"(?:\*/\*|[A-Za-z0-9][\w.+-]*/(?:\*|[\w.+-]+))", re.ASCII)


def read_document(path: Path) -> dict[str, Any]:
    """The parsed JSON of one lexicon file (not yet checked)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LexiconError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise LexiconError(f"{path}: not valid JSON ({exc})") from None


def check_document(doc: Any, label: str) -> None:
    """Checks one document's structure; `label` names it in the LexiconError raised."""
    _DocChecker(doc, label).run()


def refs_in(node: Any) -> Iterable[str]:
    """Every reference (`ref` and union `refs`) anywhere in a document's schemas, as written."""
    if isinstance(node, dict):
        if node.get("type") == "ref" and isinstance(node.get("ref"), str):
            yield node["ref"]
        if node.get("type") == "union" and isinstance(node.get("refs"), list):
            yield from node["refs"]
        for value in node.values():
            yield from refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs_in(value)


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
            self.fail("", f"a lexicon document must be a JSON object, not {type_name(doc)}")
        version = doc.get("lexicon", MISSING)
        if version is MISSING:
            self.fail("lexicon", "missing (must be 1)")
        if type(version) is not int or version != 1:
            self.fail("lexicon", f"unsupported lexicon version {json_preview(version)} (must be 1)")
        nsid = doc.get("id", MISSING)
        if nsid is MISSING:
            self.fail("id", "missing")
        if not isinstance(nsid, str):
            self.fail("id", f"must be a string NSID, not {type_name(nsid)}")
        if not is_valid("nsid", nsid):
            self.fail("id", f"{json_preview(nsid)} is not a valid NSID")
        self._opt_str(doc, "description", "")
        defs = doc.get("defs", MISSING)
        if defs is MISSING:
            self.fail("defs", "missing")
        if not isinstance(defs, dict):
            self.fail("defs", f"must be an object, not {type_name(defs)}")
        if not defs:
            self.fail("defs", "a lexicon needs at least one definition")
        for name, schema in defs.items():
            where = f"defs/{name}"
            if not _DEF_NAME_RE.fullmatch(name):
                self.fail(where, f"invalid definition name {json_preview(name)}")
            type_ = self._type_of(schema, where)
            if type_ in _PRIMARY_TYPES:
                if name != "main":
                    self.fail(where, f"{with_article(type_)} definition must be named main")
            elif type_ not in NAMED_TYPES:
                self.fail(where, f"{with_article(type_)} cannot be a named definition")
            self._check_schema(schema, type_, where)
        for where, name in self.local_refs:
            if name not in defs:
                self.fail(where, f"reference #{name}: no definition named {name} in this lexicon")

    # small field checks

    def _type_of(self, schema: Any, where: str) -> str:
        if not isinstance(schema, dict):
            self.fail(where, f"a schema must be an object, not {type_name(schema)}")
        type_ = schema.get("type", MISSING)
        if type_ is MISSING:
            self.fail(where, "missing type")
        if not isinstance(type_, str):
            self.fail(where, f"type must be a string, not {type_name(type_)}")
        if type_ not in _KNOWN_TYPES:
            self.fail(where, f"unknown type {json_preview(type_)}")
        return type_

    def _opt_str(self, node: dict[str, Any], key: str, where: str) -> None:
        if key in node and not isinstance(node[key], str):
            self.fail(_join(where, key), f"must be a string, not {type_name(node[key])}")

    def _opt_bool(self, node: dict[str, Any], key: str, where: str) -> None:
        if key in node and type(node[key]) is not bool:
            self.fail(_join(where, key), f"must be a boolean, not {type_name(node[key])}")

    def _opt_int(self, node: dict[str, Any], key: str, where: str, minimum: int | None) -> None:
        if key not in node:
            return
        value = node[key]
        if type(value) is not int:
            self.fail(_join(where, key), f"must be an integer, not {type_name(value)}")
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
            self.fail(where, f"a reference must be a string, not {type_name(ref)}")
        nsid, hash_, name = ref.partition("#")
        if hash_ and not _DEF_NAME_RE.fullmatch(name):
            self.fail(where, f"bad reference {json_preview(ref)}: invalid definition name")
        if not nsid:
            if not hash_:
                self.fail(where, "empty reference")
            self.local_refs.append((where, name))
        elif not is_valid("nsid", nsid):
            self.fail(
                where,
                f"bad reference {json_preview(ref)}: {json_preview(nsid)} is not a valid NSID",
            )

    # schemas

    def _check_schema(self, schema: dict[str, Any], type_: str, where: str) -> None:
        self._opt_str(schema, "description", where)
        getattr(self, "_check_" + type_.replace("-", "_"))(schema, where)

    def _check_field(self, schema: Any, where: str, allowed: frozenset[str], what: str) -> None:
        type_ = self._type_of(schema, where)
        if type_ not in allowed:
            self.fail(where, f"{with_article(type_)} cannot be used {what}")
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
            self.fail(_join(where, "format"), f"unknown string format {json_preview(fmt)}")
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
                self.fail(_join(where, "accept"), f"bad MIME type pattern {json_preview(pattern)}")
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
        props = schema.get("properties", MISSING)
        if props is MISSING:
            self.fail(where, "missing properties")
        if not isinstance(props, dict):
            self.fail(_join(where, "properties"), f"must be an object, not {type_name(props)}")
        for name, prop in props.items():
            if not name:
                self.fail(_join(where, "properties"), "empty property name")
            self._check_field(prop, f"{where}/properties/{name}", allowed, what)
        for key in ("required", "nullable"):
            names = self._opt_list(schema, key, where, str, "property names")
            for name in names or ():
                if name not in props:
                    self.fail(_join(where, key), f"{json_preview(name)} is not a defined property")
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
                        f"{with_article(item_type)} cannot be used as a query parameter array item",
                    )

    def _check_ref(self, schema: dict[str, Any], where: str) -> None:
        if "ref" not in schema:
            self.fail(where, "a ref needs ref")
        self._ref(schema["ref"], _join(where, "ref"))

    def _check_union(self, schema: dict[str, Any], where: str) -> None:
        refs = schema.get("refs", MISSING)
        if refs is MISSING:
            self.fail(where, "a union needs refs")
        if not isinstance(refs, list):
            self.fail(_join(where, "refs"), f"must be an array, not {type_name(refs)}")
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
        key = schema.get("key", MISSING)
        if key is MISSING:
            self.fail(where, "a record needs key (the record key type)")
        if not isinstance(key, str) or not (
            key in ("tid", "nsid", "any")
            or (key.startswith("literal:") and is_valid("record-key", key[8:]))
        ):
            self.fail(
                _join(where, "key"),
                f"unknown record key type {json_preview(key)} (tid, nsid, any or literal:<key>)",
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
            self.fail(where, f"must be an object, not {type_name(body)}")
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
        perms = schema.get("permissions", MISSING)
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
