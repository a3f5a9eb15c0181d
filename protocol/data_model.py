"""The atproto data model: DAG-CBOR values and their JSON form.

Three representations meet here:

- **DAG-CBOR bytes** (a block), the signed and hashed form.
- **IPLD values** as libipld returns them: dict/list/str/int/bool/None/bytes, where *both* CID
  links and byte strings come back as ``bytes`` (a link is the raw binary CID, see protocol/cid.py).
- **JSON form**: links are ``{"$link": "bafy..."}`` and bytes ``{"$bytes": "<base64, no padding>"}``.

libipld is lossy at the link/bytes boundary, in both directions:

- decoding cannot tell a link from a byte string (both are ``bytes``);
- ``libipld.encode_dag_cbor`` writes *any* ``bytes`` value that happens to parse as a CID as a
  tag-42 link. Measured here: about 1 random 64-byte signature in 1,300 is silently re-encoded as
  a link. Never re-encode decoded data containing byte strings with libipld.

So this module offers exact paths beside the libipld ones:

- ``block_to_json(raw)``: exact DAG-CBOR -> JSON form (libipld validates strictness and decodes;
  when the value holds any ``bytes`` a small decoder here keeps links and bytes apart). Use it
  for records.
- ``ipld_to_json(value)``: libipld value -> JSON form. Since links and bytes are both ``bytes``
  here, a value counts as a link when it is a ``Link`` or parses as a complete CIDv1; anything
  else is bytes. Exact for all atproto records whose bytes fields never look like CIDs.
- ``json_to_ipld(value)``: JSON form -> IPLD value, with links as ``Link`` (a ``bytes`` subclass).
- ``encode_dag_cbor(value)``: exact canonical DAG-CBOR of an IPLD value in which links are
  ``Link`` and plain ``bytes`` are byte strings. Falls back to the pure-Python encoder only when
  the value holds plain bytes (otherwise libipld is exact and much faster).
- ``json_to_dag_cbor(value)``: both steps at once.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Any

import libipld

from protocol.cid import CidError, cid_from_str, cid_length, cid_to_str, parse_cid
from protocol.errors import ProtocolError
from protocol.wire import WireError, encode_head, read_head


class DataModelError(ProtocolError, ValueError):
    """A value that is not valid in the atproto data model (or not decodable)."""


class Link(bytes):
    """A CID link in binary form; marks a ``bytes`` value as a link rather than a byte string."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Link({cid_to_str(self)})"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _looks_like_cid(value: bytes) -> bool:
    if len(value) < 34 or value[0] != 0x01:
        return False
    try:
        version, _codec, _hash, _digest = parse_cid(bytes(value))
    except CidError:
        return False
    return version == 1


# ---------------------------------------------------------------- libipld value -> JSON form


def ipld_to_json(value: Any) -> Any:
    """JSON data-model form of a decoded (libipld) value; see the module notes on links."""
    if isinstance(value, dict):
        return {k: ipld_to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [ipld_to_json(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if isinstance(value, Link) or _looks_like_cid(raw):
            return {"$link": cid_to_str(raw)}
        return {"$bytes": _b64(raw)}
    return value


# ---------------------------------------------------------------- JSON form -> IPLD value


def _decode_b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise DataModelError("$bytes must be a base64 string")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DataModelError(f"invalid base64 in $bytes: {text[:40]!r}") from exc


def json_to_ipld(value: Any) -> Any:
    """IPLD value (links as ``Link``) from the JSON form; DataModelError on invalid data.

    Integral floats (``123.0``, as JSON parsers may produce) become ints; other floats are
    rejected because the atproto data model has no floats.
    """
    if isinstance(value, dict):
        if "$link" in value and len(value) == 1:
            link = value["$link"]
            if not isinstance(link, str):
                raise DataModelError("$link must be a string")
            try:
                return Link(cid_from_str(link))
            except CidError as exc:
                raise DataModelError(f"invalid $link: {link!r}") from exc
        if "$bytes" in value and len(value) == 1:
            return _decode_b64(value["$bytes"])
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise DataModelError("object keys must be strings")
            out[k] = json_to_ipld(v)
        return out
    if isinstance(value, list | tuple):
        return [json_to_ipld(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        # bytes pass through untouched, so ``Link`` values and raw bytes may be mixed in.
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise DataModelError("integer out of the 64-bit range")
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise DataModelError(f"floats are not allowed in the atproto data model: {value!r}")
    raise DataModelError(f"unsupported type in data model value: {type(value).__name__}")


# ---------------------------------------------------------------- exact DAG-CBOR encoder


def _map_key(item: tuple[bytes, Any]) -> tuple[int, bytes]:
    return (len(item[0]), item[0])


def _encode_into(value: Any, out: list[bytes]) -> None:
    if isinstance(value, str):
        data = value.encode("utf-8")
        out.append(encode_head(3, len(data)))
        out.append(data)
    elif value is None:
        out.append(b"\xf6")
    elif value is True:
        out.append(b"\xf5")
    elif value is False:
        out.append(b"\xf4")
    elif isinstance(value, int):
        if value >= 0:
            out.append(encode_head(0, value))
        else:
            out.append(encode_head(1, -1 - value))
    elif isinstance(value, Link):
        out.append(b"\xd8\x2a")  # tag 42
        out.append(encode_head(2, len(value) + 1))
        out.append(b"\x00")  # multibase identity prefix, required inside tag 42
        out.append(bytes(value))
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        out.append(encode_head(2, len(data)))
        out.append(data)
    elif isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise DataModelError("map keys must be strings")
            items.append((k.encode("utf-8"), v))
        # DAG-CBOR canonical order: shorter keys first, then bytewise.
        items.sort(key=_map_key)
        out.append(encode_head(5, len(items)))
        for kb, v in items:
            out.append(encode_head(3, len(kb)))
            out.append(kb)
            _encode_into(v, out)
    elif isinstance(value, list | tuple):
        out.append(encode_head(4, len(value)))
        for v in value:
            _encode_into(v, out)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise DataModelError("non-finite floats cannot be encoded")
        out.append(b"\xfb" + struct.pack(">d", value))
    else:
        raise DataModelError(f"cannot encode {type(value).__name__} as DAG-CBOR")


def encode_dag_cbor_exact(value: Any) -> bytes:
    """Canonical DAG-CBOR, pure Python: ``Link`` -> tag 42, any other bytes -> byte string."""
    out: list[bytes] = []
    try:
        _encode_into(value, out)
    except WireError as exc:  # an int of 2**64 or more
        raise DataModelError(str(exc)) from None
    return b"".join(out)


def _has_plain_bytes(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_plain_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_plain_bytes(v) for v in value)
    return isinstance(value, bytes | bytearray | memoryview) and not isinstance(value, Link)


def encode_dag_cbor(value: Any) -> bytes:
    """Exact canonical DAG-CBOR of an IPLD value whose links are ``Link`` instances.

    Uses libipld (fast) when the value has no plain byte strings, since then libipld's
    "bytes that parse as a CID become a link" rule can only ever hit real links.
    """
    if _has_plain_bytes(value):
        return encode_dag_cbor_exact(value)
    try:
        return libipld.encode_dag_cbor(value)
    except ValueError as exc:
        raise DataModelError(str(exc)) from exc


def json_to_dag_cbor(value: Any) -> bytes:
    """Canonical DAG-CBOR block for a value in JSON form."""
    return encode_dag_cbor(json_to_ipld(value))


# ---------------------------------------------------------------- exact DAG-CBOR -> JSON form


# How deeply data values may nest (maps and arrays). The data-model spec asks parsers to guard
# against deep nesting; records past this are refused by validation, never half-stored.
MAX_NESTING = 128


def nesting_depth(value: Any) -> int:
    """How many maps/arrays deep `value` goes (0 for a scalar), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            return deepest  # enough to refuse; do not walk the rest
        stack.extend((child, depth) for child in children)
    return deepest


def _decode_json_item(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_NESTING:
        raise DataModelError("nesting too deep")
    ib = buf[pos]
    if ib >> 5 == 7:
        pos += 1
        if ib == 0xF4:
            return False, pos
        if ib == 0xF5:
            return True, pos
        if ib == 0xF6:
            return None, pos
        if ib == 0xFB:
            return struct.unpack(">d", buf[pos : pos + 8])[0], pos + 8
        if ib == 0xFA:
            return struct.unpack(">f", buf[pos : pos + 4])[0], pos + 4
        if ib == 0xF9:
            return struct.unpack(">e", buf[pos : pos + 2])[0], pos + 2
        raise DataModelError(f"unsupported CBOR simple value 0x{ib:02x}")
    major, arg, pos = read_head(buf, pos)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major == 2:
        return {"$bytes": _b64(buf[pos : pos + arg])}, pos + arg
    if major == 3:
        return buf[pos : pos + arg].decode("utf-8"), pos + arg
    if major == 4:
        items = []
        for _ in range(arg):
            item, pos = _decode_json_item(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        obj = {}
        for _ in range(arg):
            key, pos = _decode_json_item(buf, pos, depth + 1)
            if not isinstance(key, str):
                raise DataModelError("map keys must be strings")
            obj[key], pos = _decode_json_item(buf, pos, depth + 1)
        return obj, pos
    # major 6: the only tag DAG-CBOR allows is 42 (CID link), wrapping 0x00 + binary CID.
    if arg != 42 or buf[pos] >> 5 != 2:
        raise DataModelError(f"unsupported CBOR tag {arg}")
    _major, length, pos = read_head(buf, pos)
    payload = buf[pos : pos + length]
    if not payload or payload[0] != 0 or cid_length(payload, 1) != length - 1:
        raise DataModelError("malformed CID link")
    return {"$link": cid_to_str(payload[1:])}, pos + length


def _has_bytes(value: Any) -> bool:
    """True when a decoded (libipld) value holds a ``bytes`` anywhere (a link or a byte string)."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is dict:
            items: Any = v.values()
        elif t is list:
            items = v
        else:
            return t is bytes
        for x in items:
            tx = type(x)
            if tx is bytes:
                return True
            if tx is dict or tx is list:
                stack.append(x)
    return False


def block_to_json(raw: bytes) -> Any:
    """Exact JSON form of a DAG-CBOR block; DataModelError if it is not strict DAG-CBOR."""
    try:
        # Strictness checks (canonical form, no trailing data) and, usually, the answer itself.
        value = libipld.decode_dag_cbor(raw)
    except (ValueError, RecursionError) as exc:
        raise DataModelError(f"invalid DAG-CBOR: {exc}") from exc
    if not _has_bytes(value):
        # Without links or byte strings, libipld's value *is* the JSON form (same maps in the
        # same order, lists, text, ints, floats, bools, null): ~10x faster than the exact decoder.
        return value
    try:
        value, _ = _decode_json_item(bytes(raw), 0, 0)
    except (IndexError, CidError, WireError, UnicodeDecodeError, struct.error) as exc:
        raise DataModelError(f"invalid DAG-CBOR: {exc}") from exc
    return value
