"""The registry of loaded lexicons: loads and checks documents, compiles every definition once
(references resolved at load time) and validates records, data values and XRPC traffic."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from protocol.data_model import MAX_NESTING, nesting_depth
from protocol.lexicon.common import MISSING, Check, LexiconError, json_preview, with_article
from protocol.lexicon.documents import (
    NAMED_TYPES,
    REF_TARGETS,
    UNION_TARGETS,
    check_document,
    read_document,
    refs_in,
)
from protocol.lexicon.validators import (
    SIMPLE_COMPILERS,
    accept_anything,
    compile_array,
    compile_object_check,
    compile_record_check,
    compile_union,
    missing_schema,
    run_check,
)
from protocol.lexicon.xrpc import (
    Endpoint,
    Param,
    check_input,
    check_message,
    check_output,
    check_params,
)
from protocol.syntax import is_valid


class Lexicons:
    """A set of lexicon documents, checked and compiled, that data can be validated against."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, Any]] = {}
        self._labels: dict[str, str] = {}
        self._checks: dict[str, Check] = {}
        self._building: dict[str, list[Check]] = {}
        self._records: dict[str, tuple[Check, str]] = {}
        self._endpoints: dict[str, Endpoint] = {}

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
                lexicons.add(read_document(path), label=str(path))
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
            check_document(doc, name)
        except RecursionError:
            raise LexiconError(f"{name}: schemas nested too deeply") from None
        assert isinstance(doc_id, str)  # check_document refuses a document without one
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
                elif type_ in NAMED_TYPES and type_ != "token":
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
            for ref in refs_in(doc["defs"]):
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
            problems.append(f"rkey: {json_preview(rkey)} does not fit record key type {key_type}")
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
        if type_ not in NAMED_TYPES or type_ == "token":
            raise LexiconError(f"{ref} is {with_article(type_)}, which describes no data value")
        check = self._def_check(_full_ref(ref, nsid), nsid, f"defs/{name or 'main'}")
        return run_check(check, value, "value")

    def validate_params(
        self, nsid: str, params: Mapping[str, str | list[str]]
    ) -> tuple[dict[str, Any], list[str]]:
        """Checks the query-string parameters of endpoint `nsid`, converting the strings to
        the declared types and filling in defaults. Returns (converted parameters, problems);
        parameters the lexicon does not declare, and invalid ones, are left out."""
        return check_params(self._endpoint_of(nsid), params)

    def validate_input(self, nsid: str, body: Any) -> list[str]:
        """Problems with a JSON request body for procedure `nsid` (empty when the lexicon
        gives no input schema)."""
        return check_input(nsid, self._endpoint_of(nsid), body)

    def validate_output(self, nsid: str, body: Any) -> list[str]:
        """Problems with a JSON response body of query or procedure `nsid` (empty when the
        lexicon gives no output schema)."""
        return check_output(nsid, self._endpoint_of(nsid), body)

    def validate_message(self, nsid: str, body: Any, message_type: str | None = None) -> list[str]:
        """Problems with one message of subscription `nsid`. The variant comes from
        `message_type` (the frame header's type, like "#commit") or else the body's `$type`:
        at the top level of a message `$type` is optional."""
        return check_message(nsid, self._endpoint_of(nsid), body, message_type)

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
            raise LexiconError(f"{nsid} is {with_article(schema['type'])}, not a record")
        entry = (self._def_check(f"{nsid}#main", nsid, "defs/main"), schema["key"])
        self._records[nsid] = entry
        return entry

    def _endpoint_of(self, nsid: str) -> Endpoint:
        endpoint = self._endpoints.get(nsid)
        if endpoint is None:
            schema = self.get_def(nsid)
            if schema is None:
                raise LexiconError(f"no lexicon for endpoint {nsid} is loaded")
            if schema["type"] not in ("query", "procedure", "subscription"):
                raise LexiconError(
                    f"{nsid} is {with_article(schema['type'])}, not an XRPC endpoint"
                )
            endpoint = self._endpoint(nsid)
        return endpoint

    def _endpoint(self, nsid: str) -> Endpoint:
        schema = self._docs[nsid]["defs"]["main"]
        params: list[Param] = []
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
                check = compile_array(prop, accept_anything)
            else:
                check = accept_anything
            params.append(
                Param(
                    name=name,
                    kind=kind,
                    is_array=is_array,
                    required=name in required,
                    default=prop.get("default", MISSING),
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
        endpoint = Endpoint(
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
                check = compile_record_check(nsid, body)
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
            return missing_schema(full)
        target = doc["defs"].get(name)
        if target is None:
            self._fail(doc_id, where, f"reference {ref}: lexicon {nsid} has no definition {name}")
        if target["type"] not in allowed:
            self._fail(doc_id, where, f"reference {ref} points to {with_article(target['type'])}")
        return self._def_check(full, nsid, f"defs/{name}")

    def _object(self, schema: dict[str, Any], doc_id: str, where: str) -> Check:
        props = {
            name: self._field(prop, doc_id, f"{where}/properties/{name}")
            for name, prop in schema["properties"].items()
        }
        nullable = set(schema.get("nullable", ()))
        nullable.update(k for k, prop in schema["properties"].items() if prop["type"] == "null")
        return compile_object_check(props, tuple(schema.get("required", ())), frozenset(nullable))

    def _union_variants(
        self, schema: dict[str, Any], doc_id: str, where: str
    ) -> tuple[dict[str, Check], list[str]]:
        """A union's checks by the `$type` values that select them, and the variant names."""
        variants: dict[str, Check] = {}
        for i, ref in enumerate(schema["refs"]):
            check = self._resolve(ref, doc_id, f"{where}/refs/{i}", UNION_TARGETS)
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
            return compile_array(schema, self._field(schema["items"], doc_id, f"{where}/items"))
        if type_ == "ref":
            return self._resolve(schema["ref"], doc_id, f"{where}/ref", REF_TARGETS)
        if type_ == "union":
            variants, names = self._union_variants(schema, doc_id, where)
            return compile_union(variants, bool(schema.get("closed")), names)
        compile_simple = SIMPLE_COMPILERS.get(type_)
        if compile_simple is None:
            self._fail(doc_id, where, f"{with_article(type_)} cannot be used as a data field")
        return compile_simple(schema)


def _full_ref(ref: str, doc_id: str) -> str:
    """`#name` -> `doc_id#name`, `nsid` -> `nsid#main`, `nsid#name` unchanged."""
    if ref.startswith("#"):
        return doc_id + ref
    return ref if "#" in ref else ref + "#main"


def _type_value(full: str) -> str:
    """The `$type` value naming a definition: a main definition by its bare NSID."""
    return full[:-5] if full.endswith("#main") else full


def _rkey_fits(key_type: str, rkey: str) -> bool:
    """Whether a record key has the syntax the record's key type asks for."""
    if key_type == "tid":
        return is_valid("tid", rkey)
    if key_type == "nsid":
        return is_valid("nsid", rkey)
    if key_type.startswith("literal:"):
        return rkey == key_type[8:]
    return is_valid("record-key", rkey)
