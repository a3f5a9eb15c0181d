"""The XRPC methods of the AppView, read from the query/procedure lexicons, and the checks of
their parameters, input bodies and outputs (by the project's lexicon validator)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from core.lexicons import LEXICONS_DIR
from protocol.lexicon import Lexicons


@dataclass(frozen=True)
class Method:
    nsid: str
    kind: str                              # "query" or "procedure"
    description: str
    params: dict[str, Any]                 # the lexicon `params` object (may be empty)
    input: dict[str, Any] | None           # the lexicon `input` (procedures)
    output: dict[str, Any] | None
    errors: tuple[str, ...] = field(default=())


class LexiconSet:
    """Every lexicon document under a folder, the query/procedure methods among them, and the
    validator compiled from them."""

    def __init__(self, validator: Lexicons, docs: Mapping[str, dict[str, Any]]) -> None:
        self.validator = validator
        self.docs = dict(docs)
        self.methods: dict[str, Method] = {}
        for nsid, doc in self.docs.items():
            main = doc.get("defs", {}).get("main")
            if not main or main.get("type") not in ("query", "procedure"):
                continue
            self.methods[nsid] = Method(
                nsid=nsid,
                kind=main["type"],
                description=main.get("description", ""),
                params=main.get("parameters") or {"type": "params", "properties": {}},
                input=main.get("input"),
                output=main.get("output"),
                errors=tuple(e["name"] for e in main.get("errors", [])),
            )

    @classmethod
    def load(cls, folder: Path = LEXICONS_DIR, *, validator: Lexicons | None = None) -> LexiconSet:
        """The documents of `folder`; `validator`: those same lexicons already loaded (the
        process's), else they are loaded here."""
        if validator is None:
            validator = Lexicons.load(folder)  # checks every document; raises on a broken one
        docs: dict[str, dict[str, Any]] = {}
        for path in sorted(folder.rglob("*.json")):
            doc = orjson.loads(path.read_bytes())
            docs[doc["id"]] = doc
        return cls(validator, docs)

    def coerce_params(self, method: Method, query: Any) -> tuple[dict[str, Any], list[str]]:
        """Query-string values (a MultiDict) -> typed values with defaults; and the problems."""
        raw: dict[str, list[str]] = {}
        for key in query:
            if key not in raw:
                raw[key] = query.getall(key)
        return self.validator.validate_params(method.nsid, raw)

    def check_input(self, method: Method, body: Any) -> list[str]:
        return self.validator.validate_input(method.nsid, body)

    def check_output(self, method: Method, body: Any) -> list[str]:
        return self.validator.validate_output(method.nsid, body)

