"""Opaque pagination cursors: a versioned tuple of typed keys, base64url-encoded.

Clients must treat cursors as opaque; we still check every one we get back, so a tampered or
truncated cursor is a 400, never a query error.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from appview.errors import invalid_request

_VERSION = 1
_MAX_MICROS = 253402300799_999999  # 9999-12-31T23:59:59.999999Z, the last datetime Python has
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def encode(*keys: Any) -> str:
    """`keys` are ints, strings or aware datetimes (stored as microseconds since the epoch)."""
    parts: list[Any] = [_VERSION]
    for key in keys:
        if isinstance(key, datetime):
            parts.append(["t", (key - _EPOCH) // _MICRO])
        else:
            parts.append(key)
    return base64.urlsafe_b64encode(orjson.dumps(parts)).rstrip(b"=").decode()


def decode(cursor: str, *types: type) -> tuple[Any, ...]:
    """The keys of a cursor made by `encode`, checked against `types` (int, str or datetime)."""
    bad = invalid_request("malformed cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(parts, list) or len(parts) != len(types) + 1 or parts[0] != _VERSION:
        raise bad
    keys: list[Any] = []
    for kind, value in zip(types, parts[1:], strict=True):
        if kind is datetime:
            if (
                not isinstance(value, list)
                or len(value) != 2
                or value[0] != "t"
                or type(value[1]) is not int
                or not 0 <= value[1] <= _MAX_MICROS
            ):
                raise bad
            keys.append(_EPOCH + timedelta(microseconds=value[1]))
        elif kind is int:
            if type(value) is not int or not -(2**62) <= value <= 2**62:
                raise bad
            keys.append(value)
        elif kind is str:
            if not isinstance(value, str) or len(value) > 2048 or "\x00" in value:
                raise bad
            keys.append(value)
        else:
            raise TypeError(f"unsupported cursor key type {kind}")
    return tuple(keys)
