"""Compiling schemas into checks: each definition becomes a closure that walks the data once,
with every limit, pattern and message prepared ahead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grapheme

from protocol.lexicon.common import MISSING, Check, json_preview, type_name
from protocol.lexicon.data import (
    INT64_MAX,
    INT64_MIN,
    bytes_length,
    check_blob_shape,
    check_data,
    check_link,
)
from protocol.syntax import is_valid


def _compile_null(schema: dict[str, Any]) -> Check:
    def check(value: Any, path: str, problems: list[str]) -> None:
        if value is not None:
            problems.append(f"{path}: must be null, not {type_name(value)}")

    return check


def _compile_boolean(schema: dict[str, Any]) -> Check:
    const = schema.get("const")

    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not bool:
            problems.append(f"{path}: must be a boolean, not {type_name(value)}")
        elif const is not None and value is not const:
            problems.append(f"{path}: must be {json_preview(const)}")

    return check


def _compile_integer(schema: dict[str, Any]) -> Check:
    const = schema.get("const")
    enum = frozenset(schema["enum"]) if "enum" in schema else None
    enum_text = json_preview(schema.get("enum"))
    low = schema.get("minimum", INT64_MIN)
    high = schema.get("maximum", INT64_MAX)
    low_msg = f"must be at least {low}" if "minimum" in schema else "is below the 64-bit range"
    high_msg = f"must be at most {high}" if "maximum" in schema else "is above the 64-bit range"

    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not int:
            problems.append(f"{path}: must be an integer, not {type_name(value)}")
            return
        if value < low or value < INT64_MIN:
            problems.append(f"{path}: {low_msg}, got {value}")
        elif value > high or value > INT64_MAX:
            problems.append(f"{path}: {high_msg}, got {value}")
        if const is not None and value != const:
            problems.append(f"{path}: must be {const}, got {value}")
        if enum is not None and value not in enum:
            problems.append(f"{path}: must be one of {enum_text}, got {value}")

    return check


def grapheme_count(text: str, until: int | None = None) -> int:
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
    enum_text = json_preview(schema.get("enum"))
    min_len = schema.get("minLength")
    max_len = schema.get("maxLength")
    min_g = schema.get("minGraphemes")
    max_g = schema.get("maxGraphemes")
    sized = min_len is not None or max_len is not None

    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not str:
            problems.append(f"{path}: must be a string, not {type_name(value)}")
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
            count = grapheme_count(value, max_g + 1)
            if count > max_g:
                problems.append(f"{path}: must be at most {max_g} graphemes, got more")
        if min_g is not None:
            count = grapheme_count(value, min_g)
            if count < min_g:
                problems.append(f"{path}: must be at least {min_g} graphemes, got {count}")
        if const is not None and value != const:
            problems.append(f"{path}: must be {json_preview(const)}")
        if enum is not None and value not in enum:
            problems.append(f"{path}: must be one of {enum_text}, got {json_preview(value)}")
        if fmt is not None and not is_valid(fmt, value):
            problems.append(f"{path}: must be a valid {fmt}")

    return check


def _compile_bytes(schema: dict[str, Any]) -> Check:
    min_len = schema.get("minLength")
    max_len = schema.get("maxLength")

    def check(value: Any, path: str, problems: list[str]) -> None:
        size = bytes_length(value)
        if size is None:
            problems.append(f'{path}: must be bytes ({{"$bytes": base64}})')
        elif max_len is not None and size > max_len:
            problems.append(f"{path}: must be at most {max_len} bytes, got {size}")
        elif min_len is not None and size < min_len:
            problems.append(f"{path}: must be at least {min_len} bytes, got {size}")

    return check


def _compile_cid_link(schema: dict[str, Any]) -> Check:
    def check(value: Any, path: str, problems: list[str]) -> None:
        check_link(value, path, problems)

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
        shape = check_blob_shape(value, path, problems)
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
            problems.append(f"{path}: must be an object, not {type_name(value)}")
        elif value.get("$type") == "blob" or "$link" in value or "$bytes" in value:
            problems.append(f"{path}: must be a plain object, not a blob, link or bytes")
        else:
            check_data(value, path, problems)

    return check


def compile_array(schema: dict[str, Any], items: Check) -> Check:
    min_len = schema.get("minLength")
    max_len = schema.get("maxLength")

    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not list:
            problems.append(f"{path}: must be an array, not {type_name(value)}")
            return
        if max_len is not None and len(value) > max_len:
            problems.append(f"{path}: must have at most {max_len} items, got {len(value)}")
        elif min_len is not None and len(value) < min_len:
            problems.append(f"{path}: must have at least {min_len} items, got {len(value)}")
        for i, item in enumerate(value):
            items(item, f"{path}/{i}", problems)

    return check


def compile_object_check(
    props: dict[str, Check], required: tuple[str, ...], nullable: frozenset[str]
) -> Check:
    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not dict:
            problems.append(f"{path}: must be an object, not {type_name(value)}")
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
                    check_data(item, f"{path}/{key}", problems)
            elif item is None:
                if key not in nullable:
                    problems.append(f"{path}/{key}: must not be null")
            else:
                sub(item, f"{path}/{key}", problems)

    return check


def compile_record_check(nsid: str, body: Check) -> Check:
    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not dict:
            problems.append(f"{path}: must be an object, not {type_name(value)}")
            return
        type_ = value.get("$type", MISSING)
        if type_ is MISSING:
            problems.append(
                f"{path}/$type: required field is missing (must be {json_preview(nsid)})"
            )
        elif type_ != nsid:
            problems.append(
                f"{path}/$type: must be {json_preview(nsid)}, got {json_preview(type_)}"
            )
        body(value, path, problems)

    return check


def compile_union(variants: dict[str, Check], closed: bool, names: list[str]) -> Check:
    names_text = ", ".join(names) or "(none)"

    def check(value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not dict:
            problems.append(f"{path}: must be an object, not {type_name(value)}")
            return
        type_ = value.get("$type")
        if type(type_) is not str or not type_:
            problems.append(f"{path}/$type: required in a union member (one of {names_text})")
            return
        sub = variants.get(type_)
        if sub is not None:
            sub(value, path, problems)
        elif closed:
            problems.append(f"{path}/$type: must be one of {names_text}, got {json_preview(type_)}")
        else:
            # Open union: a variant this schema version does not know is fine, as data.
            check_data(value, path, problems)

    return check


def accept_anything(value: Any, path: str, problems: list[str]) -> None:
    """The check of a value with nothing to check (an `unknown` query parameter)."""
    pass


def missing_schema(ref: str) -> Check:
    """The check standing in for a reference to a lexicon that is not loaded."""

    def check(value: Any, path: str, problems: list[str]) -> None:
        problems.append(f"{path}: cannot be validated: lexicon {ref} is not loaded")

    return check


# Compilers of the types that need no other definition.
SIMPLE_COMPILERS: dict[str, Callable[[dict[str, Any]], Check]] = {
    "null": _compile_null,
    "boolean": _compile_boolean,
    "integer": _compile_integer,
    "string": _compile_string,
    "bytes": _compile_bytes,
    "cid-link": _compile_cid_link,
    "blob": _compile_blob,
    "unknown": _compile_unknown,
}


def run_check(check: Check, value: Any, root: str) -> list[str]:
    """The problems `check` finds in `value`; data nested past Python's stack is one more."""
    problems: list[str] = []
    try:
        check(value, root, problems)
    except RecursionError:
        problems.append(f"{root}: nested too deeply")
    return problems
