"""What the parts of the lexicon package share: the error, the shape of a compiled check, and
how messages name values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from protocol.errors import ProtocolError


class LexiconError(ProtocolError):
    """A lexicon document is malformed, or a schema was asked for that is not loaded."""


# A compiled validator: checks `value`, appending "path: problem" lines to `problems`.
Check = Callable[[Any, str, list[str]], None]

# Marks an absent key where None is a value.
MISSING: Any = object()


def json_preview(value: Any) -> str:
    """A value as it would appear in JSON, shortened for messages."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def with_article(word: str) -> str:
    """ "a record", "an object"."""
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def type_name(value: Any) -> str:
    """The data-model name of a value's type, for messages."""
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
