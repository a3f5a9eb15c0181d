"""MST nodes (repo format v3): key heights, and the node block codec.

A node is ``{"l": link | null, "e": [{"p": prefix len, "k": key suffix, "v": value link,
"t": link | null}, ...]}``. Keys in a node all have the same height (leading zero bits of
SHA-256(key), counted in 2-bit units); ``l`` points to the subtree of keys sorting before the
first entry and each ``t`` to the subtree between its entry and the next.

``decode_node`` checks what one block says (key compression, sort order, entry count, link
shapes); the rules that span nodes (heights, ranges) belong to the walk and the inversion.
Nodes are encoded by hand: the shape is fixed, and it is faster than building dicts for libipld.
"""

from __future__ import annotations

import functools
import hashlib

import libipld

from protocol.cid import DAG_CBOR_PREFIX, is_dag_cbor_cid
from protocol.errors import ProtocolError
from protocol.wire import encode_head

# Statistically a node holds ~4 entries; thousands means mined keys or a broken tree.
MAX_ENTRIES = 2048
MAX_HEIGHT = 128

_sha256 = hashlib.sha256

# (left link, keys, value links, right-subtree links) of one node
DecodedNode = tuple[bytes | None, list[bytes], list[bytes], list[bytes | None]]


class MstError(ProtocolError, ValueError):
    """A malformed MST node or tree."""


class MissingBlock(ProtocolError, LookupError):
    """An MST node needed for the walk is not available."""

    def __init__(self, cid: bytes) -> None:
        super().__init__(f"missing MST block {cid.hex()}")
        self.cid = cid


def key_height(key: str | bytes) -> int:
    """Height ("depth" in the spec) of a key: leading zero bits of its SHA-256, divided by 2."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    return _bytes_key_height(key)


@functools.lru_cache(maxsize=65536)
def _bytes_key_height(key: bytes) -> int:
    # Cached: the firehose inversion and the backfill walk see the same upper-node keys of a
    # repo over and over (a hit costs a tenth of the hash).
    digest = _sha256(key).digest()
    return (256 - int.from_bytes(digest, "big").bit_length()) >> 1


def common_prefix_len(a: bytes | str, b: bytes | str) -> int:
    """Length of the shared prefix of two keys (bytes, or str compared by UTF-8 bytes)."""
    if isinstance(a, str):
        a = a.encode("utf-8")
    if isinstance(b, str):
        b = b.encode("utf-8")
    n = min(len(a), len(b))
    # XOR of the two prefixes as big integers: the first differing byte is the highest set bit.
    diff = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    if not diff:
        return n
    return n - 1 - (diff.bit_length() - 1) // 8


def decode_node(cid: bytes, raw: bytes) -> DecodedNode:
    """(left link, keys, value links, right-subtree links) of one node block."""
    try:
        node = libipld.decode_dag_cbor(raw)
    except (ValueError, RecursionError) as exc:
        raise MstError(f"MST node {cid.hex()[:16]} is not valid DAG-CBOR: {exc}") from exc
    if not isinstance(node, dict) or not isinstance(node.get("e"), list):
        raise MstError(f"MST node {cid.hex()[:16]} has no entry list")
    left = node.get("l")
    if left is not None and not (isinstance(left, bytes) and is_dag_cbor_cid(left)):
        raise MstError("MST node left link is not a dag-cbor CID")
    entries = node["e"]
    if len(entries) > MAX_ENTRIES:
        raise MstError(f"MST node has {len(entries)} entries (limit {MAX_ENTRIES})")
    keys: list[bytes] = []
    values: list[bytes] = []
    trees: list[bytes | None] = []
    prev = b""
    for entry in entries:
        try:
            p = entry["p"]
            suffix = entry["k"]
            value = entry["v"]
        except (TypeError, KeyError) as exc:
            raise MstError("MST entry is not a map with p, k and v") from exc
        tree = entry.get("t")
        if type(p) is not int or type(suffix) is not bytes:
            raise MstError("MST entry has a bad prefix length or key suffix")
        if p < 0 or p > len(prev) or (not keys and p != 0):
            raise MstError(f"MST entry prefix length {p} is out of range")
        if keys and p < len(prev) and suffix and prev[p] == suffix[0]:
            # Compression is mandatory and maximal: otherwise one tree has several encodings.
            raise MstError("MST entry key compression is not maximal")
        key = prev[:p] + suffix if p else suffix
        if not key or (keys and key <= prev):
            raise MstError("MST node keys are empty or out of order")
        if type(value) is not bytes or len(value) < 34:
            raise MstError("MST entry value is not a CID link")
        if tree is not None and (
            type(tree) is not bytes or len(tree) != 36 or tree[:4] != DAG_CBOR_PREFIX
        ):
            raise MstError("MST entry subtree link is not a dag-cbor CID")
        keys.append(key)
        values.append(value)
        trees.append(tree)
        prev = key
    return left, keys, values, trees


_LINK36 = b"\xd8\x2a\x58\x25\x00"  # tag 42, bytes(37), multibase identity prefix


def _link(cid: bytes | None) -> bytes:
    if cid is None:
        return b"\xf6"
    if len(cid) == 36:
        return _LINK36 + cid
    return b"\xd8\x2a" + encode_head(2, len(cid) + 1) + b"\x00" + cid


# Pre-built CBOR heads for byte strings and small unsigned ints (suffixes and prefix lengths).
_BYTES_HEAD = [encode_head(2, n) for n in range(256)]
_UINT_HEAD = [encode_head(0, n) for n in range(256)]


def encode_node(
    left: bytes | None, keys: list[bytes], values: list[bytes], trees: list[bytes | None]
) -> bytes:
    """Canonical DAG-CBOR of an MST node (keys sorted, prefix-compressed here)."""
    parts = [b"\xa2\x61e", encode_head(4, len(keys))]
    append = parts.append
    prev = b""
    for key, value, tree in zip(keys, values, trees, strict=True):
        p = common_prefix_len(prev, key) if prev else 0
        suffix = key[p:]
        n = len(suffix)
        # Entry map keys in canonical order: k, p, t, v.
        append(
            b"\xa4\x61k"
            + (_BYTES_HEAD[n] if n < 256 else encode_head(2, n))
            + suffix
            + b"\x61p"
            + (_UINT_HEAD[p] if p < 256 else encode_head(0, p))
            + b"\x61t"
            + (b"\xf6" if tree is None else _link(tree))
            + b"\x61v"
            + (_LINK36 + value if len(value) == 36 else _link(value))
        )
        prev = key
    append(b"\x61l")
    append(_link(left))
    return b"".join(parts)
