"""Checks of atproto data values that no schema describes: the data model's own rules (no floats,
64-bit integers, well-formed `$link`, `$bytes` and blob objects). Used for fields a schema does
not know and for members of open unions."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from protocol.lexicon.common import MISSING, type_name
from protocol.syntax import is_valid

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)


def check_link(value: Any, path: str, problems: list[str]) -> bool:
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


def bytes_length(value: Any) -> int | None:
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


def check_blob_shape(value: Any, path: str, problems: list[str]) -> tuple[str, int | None] | None:
    """Checks a blob reference; returns (mimeType, size or None for legacy blobs) when valid."""
    if type(value) is not dict:
        problems.append(f"{path}: must be a blob, not {type_name(value)}")
        return None
    start = len(problems)
    if "$type" in value:
        if value["$type"] != "blob":
            problems.append(f'{path}/$type: must be "blob"')
            return None
        check_link(value.get("ref"), f"{path}/ref", problems)
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
    if len(problems) != start:
        return None
    assert isinstance(mime, str)  # checked above: a non-empty string
    return mime, size if isinstance(size, int) else None


def check_data(value: Any, path: str, problems: list[str]) -> None:
    """Checks that a value outside any schema is valid atproto data (no floats, well-formed
    $link/$bytes/blob objects, 64-bit integers)."""
    t = type(value)
    if t is str or t is bool or value is None or t is bytes:
        return
    if t is int:
        if not INT64_MIN <= value <= INT64_MAX:
            problems.append(f"{path}: integer out of the 64-bit range")
        return
    if t is list:
        for i, item in enumerate(value):
            check_data(item, f"{path}/{i}", problems)
        return
    if t is dict:
        if "$link" in value:
            check_link(value, path, problems)
            return
        if "$bytes" in value:
            if bytes_length(value) is None:
                problems.append(f'{path}: must be bytes ({{"$bytes": base64}})')
            return
        type_ = value.get("$type", MISSING)
        if type_ == "blob":
            check_blob_shape(value, path, problems)
            return
        if type_ is not MISSING and (not isinstance(type_, str) or not type_):
            problems.append(f"{path}/$type: must be a non-empty string")
        for key, item in value.items():
            if type(key) is not str:
                problems.append(f"{path}: object keys must be strings")
            else:
                check_data(item, f"{path}/{key}", problems)
        return
    if t is float:
        problems.append(f"{path}: floats are not allowed in atproto data")
        return
    problems.append(f"{path}: {t.__name__} is not an atproto data value")
