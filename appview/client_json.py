"""The one check on JSON a client sends us to keep (every procedure body goes through it).

Lexicon validation alone is not enough: open objects (preferences) take any extra keys, so a
body may nest arbitrarily deep or carry NUL characters anywhere. Postgres jsonb refuses NUL
(a 500 instead of a 400), and orjson refuses to encode more than 254 levels (a value stored at
depth 253 made every later read of it a 500). So: bounded depth, bounded encoded size, and no
U+0000 in any string or key, checked at every level before anything is stored.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 32  # levels of objects/arrays, the top one included: far beyond any lexicon
MAX_BYTES = 128 * 1024  # encoded; a full queue (500 AT-URIs) is about 40 KB


def client_json_problem(value: Any, *, max_depth: int = MAX_DEPTH, max_bytes: int | None = MAX_BYTES) -> str | None:
    """Why `value` cannot be stored, in words for the client; None when it can.
    `max_bytes=None` skips the size check (for values already stored)."""
    # Iterative: a hostile value must not be able to exhaust the interpreter's stack.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "strings must not contain NUL characters (U+0000)"
        elif isinstance(item, dict | list):
            if depth > max_depth:
                return f"JSON is nested too deep (at most {max_depth} levels of objects and arrays)"
            if isinstance(item, dict):
                for key, child in item.items():
                    if "\x00" in key:
                        return "object keys must not contain NUL characters (U+0000)"
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
    if max_bytes is not None:
        size = len(orjson.dumps(value))
        if size > max_bytes:
            return f"JSON is too large to store ({size} bytes encoded, at most {max_bytes})"
    return None
