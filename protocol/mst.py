"""Merkle Search Trees (repo format v3): key heights, a pruning walker, and a tree builder.

A node is ``{"l": link | null, "e": [{"p": prefix len, "k": key suffix, "v": value link,
"t": link | null}, ...]}``. Keys in a node all have the same height (leading zero bits of
SHA-256(key), counted in 2-bit units); ``l`` points to the subtree of keys sorting before the
first entry and each ``t`` to the subtree between its entry and the next. Subtrees sit exactly
one height lower; empty intermediate nodes keep that rule when a level has no keys.

``walk`` visits only subtrees whose key range can meet ``[start, end)``, so listing one
collection of a large repo fetches a handful of nodes per level instead of the whole tree. It
checks what it reads (key compression, sort order, heights, entry counts) and raises
``MstError`` on malformed nodes and ``MissingBlock`` when ``get_block`` has no such node. It
does not re-hash blocks: ``get_block`` should serve verified blocks (``protocol.car.read_car``
verifies by default).

``invert_ops`` undoes a commit's record operations on the partial tree carried by a firehose
diff (loading only the nodes it touches) and returns the root it leads to, which must equal the
event's ``prevData`` -- the sync spec's "operation inversion" check.

``TreeBuilder`` builds node blocks for a key -> CID mapping and, on rebuild, re-encodes only the
subtrees whose key range saw changes (used by tests/support/repo_builder.py); ``build_mst`` is
the one-shot form. Nodes are encoded by hand: the shape is fixed, and it is faster than building
dicts for libipld.
"""

from __future__ import annotations

import functools
import hashlib
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator

import libipld

from protocol.cid import DAG_CBOR_PREFIX, cid_for_cbor, is_dag_cbor_cid
from protocol.errors import ProtocolError

# Statistically a node holds ~4 entries; thousands means mined keys or a broken tree.
MAX_ENTRIES = 2048
MAX_HEIGHT = 128

_sha256 = hashlib.sha256


_ROOT = -1


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


# ---------------------------------------------------------------- reading


def _decode_node(
    cid: bytes, raw: bytes
) -> tuple[bytes | None, list[bytes], list[bytes], list[bytes | None]]:
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


def walk(
    root: bytes,
    get_block: Callable[[bytes], bytes | None],
    *,
    start: str | None = None,
    end: str | None = None,
    verify_heights: bool = True,
) -> Iterator[tuple[str, bytes]]:
    """Yield (key, value CID) for every key in ``[start, end)`` in key order.

    Only subtrees that can hold keys in the range are fetched. E.g. ``start="fm.plyr."``,
    ``end="fm.plyr/"`` lists every ``fm.plyr.*`` collection ("/" sorts right after ".").
    """
    lo_bound = start.encode("utf-8") if start is not None else None
    hi_bound = end.encode("utf-8") if end is not None else None
    last: bytes | None = None
    # Work stack in reverse key order. Items are (node cid, expected height, lower bound, upper
    # bound) for subtrees -- expected height _ROOT for the root, None when not checked -- or
    # (key, value) pairs ready to yield.
    stack: list[tuple] = [(root, _ROOT, None, None)]
    while stack:
        item = stack.pop()
        if len(item) == 2:
            key, value = item
            if hi_bound is not None and key >= hi_bound:
                return  # everything after this sorts later still
            if last is not None and key <= last:
                raise MstError("MST keys are out of order across nodes")
            last = key
            yield key.decode("utf-8", "surrogateescape"), value
            continue
        cid, expected, lo, hi = item
        raw = get_block(cid)
        if raw is None:
            raise MissingBlock(cid)
        left, keys, values, trees = _decode_node(cid, raw)
        is_root = expected == _ROOT
        if not keys:
            if is_root:
                if left is not None:
                    raise MstError("MST root is an empty node pointing to a subtree")
                return  # the empty repository
            if left is None:
                raise MstError("empty MST node below the root")
        elif (lo is not None and keys[0] <= lo) or (hi is not None and keys[-1] >= hi):
            raise MstError("MST subtree holds keys outside its parent's range")
        child_expected: int | None = None
        if verify_heights:
            if keys:
                height = key_height(keys[0])
                if not is_root and height != expected:
                    raise MstError(f"MST key of height {height} in a node of height {expected}")
                for k in keys[1:]:
                    if key_height(k) != height:
                        raise MstError("MST node mixes keys of different heights")
            else:
                height = expected  # empty intermediate node: its parent's height minus one
            if height == 0 and (left is not None or any(t is not None for t in trees)):
                raise MstError("MST node at height 0 links to a subtree")
            child_expected = height - 1
        # Push in reverse order, pruning what cannot meet [start, end).
        n = len(keys)
        for i in range(n, -1, -1):
            sub = left if i == 0 else trees[i - 1]
            sub_lo = lo if i == 0 else keys[i - 1]
            sub_hi = hi if i == n else keys[i]
            if sub is not None and (
                (hi_bound is None or sub_lo is None or sub_lo < hi_bound)
                and (lo_bound is None or sub_hi is None or sub_hi > lo_bound)
            ):
                stack.append((sub, child_expected, sub_lo, sub_hi))
            if i > 0:
                k = keys[i - 1]
                if lo_bound is None or k >= lo_bound:
                    stack.append((k, values[i - 1]))


def lookup(root: bytes, get_block: Callable[[bytes], bytes | None], key: str) -> bytes | None:
    """The value CID stored under ``key``, or None; touches only the nodes on its path."""
    for k, v in walk(root, get_block, start=key, end=key + "\x00"):
        if k == key:
            return v
    return None


# ---------------------------------------------------------------- building


def _head(major: int, arg: int) -> bytes:
    m = major << 5
    if arg < 24:
        return bytes((m | arg,))
    if arg < 0x100:
        return bytes((m | 24, arg))
    if arg < 0x10000:
        return bytes((m | 25,)) + arg.to_bytes(2, "big")
    return bytes((m | 26,)) + arg.to_bytes(4, "big")


_LINK36 = b"\xd8\x2a\x58\x25\x00"  # tag 42, bytes(37), multibase identity prefix


def _link(cid: bytes | None) -> bytes:
    if cid is None:
        return b"\xf6"
    if len(cid) == 36:
        return _LINK36 + cid
    return b"\xd8\x2a" + _head(2, len(cid) + 1) + b"\x00" + cid


# Pre-built CBOR heads for byte strings and small unsigned ints (suffixes and prefix lengths).
_BYTES_HEAD = [_head(2, n) for n in range(256)]
_UINT_HEAD = [_head(0, n) for n in range(256)]


def encode_node(
    left: bytes | None, keys: list[bytes], values: list[bytes], trees: list[bytes | None]
) -> bytes:
    """Canonical DAG-CBOR of an MST node (keys sorted, prefix-compressed here)."""
    parts = [b"\xa2\x61e", _head(4, len(keys))]
    append = parts.append
    prev = b""
    for key, value, tree in zip(keys, values, trees, strict=True):
        p = common_prefix_len(prev, key) if prev else 0
        suffix = key[p:]
        n = len(suffix)
        # Entry map keys in canonical order: k, p, t, v.
        append(
            b"\xa4\x61k"
            + (_BYTES_HEAD[n] if n < 256 else _head(2, n))
            + suffix
            + b"\x61p"
            + (_UINT_HEAD[p] if p < 256 else _head(0, p))
            + b"\x61t"
            + (b"\xf6" if tree is None else _link(tree))
            + b"\x61v"
            + (_LINK36 + value if len(value) == 36 else _link(value))
        )
        prev = key
    append(b"\x61l")
    append(_link(left))
    return b"".join(parts)


class Node:
    """One built MST node, with links to its built children (for proofs and CAR export)."""

    __slots__ = ("cid", "block", "height", "lo", "hi", "keys", "values", "children")

    def __init__(
        self,
        cid: bytes,
        block: bytes,
        height: int,
        lo: bytes | None,
        hi: bytes | None,
        keys: list[bytes],
        values: list[bytes],
        children: list[Node | None],
    ) -> None:
        self.cid = cid
        self.block = block
        self.height = height
        self.lo = lo
        self.hi = hi
        self.keys = keys
        self.values = values
        self.children = children  # len(keys) + 1: left subtree, then one after each key

    def iter_nodes(self) -> Iterator[Node]:
        """This node and its descendants, pre-order."""
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(c for c in reversed(node.children) if c is not None)


class TreeBuilder:
    """Incrementally maintained MST: ``set``/``delete`` keys, then ``build()`` the root.

    Rebuilding reuses every previously built subtree whose key range saw no change, so a commit
    touching a few keys of a 100k-key tree re-encodes only the nodes on those keys' paths.
    """

    def __init__(self) -> None:
        self._values: dict[bytes, bytes] = {}
        self._heights: dict[bytes, int] = {}
        self._keys: list[bytes] = []
        self._by_height: dict[int, list[bytes]] = {}
        self._pending: dict[bytes, bytes | None] = {}
        self._root: Node | None = None
        self._changed: list[bytes] = []
        self.new_nodes: list[Node] = []  # nodes encoded by the last build (others were reused)

    def __len__(self) -> int:
        return len(self._values) + sum(
            (v is not None) - (k in self._values) for k, v in self._pending.items()
        )

    def get(self, key: str | bytes) -> bytes | None:
        kb = key.encode("utf-8") if isinstance(key, str) else key
        if kb in self._pending:
            return self._pending[kb]
        return self._values.get(kb)

    def set(self, key: str | bytes, value: bytes) -> None:
        kb = key.encode("utf-8") if isinstance(key, str) else key
        if not kb:
            raise MstError("MST keys cannot be empty")
        if len(value) < 34:
            raise MstError("MST values must be CIDs")
        self._pending[kb] = bytes(value)

    def delete(self, key: str | bytes) -> None:
        kb = key.encode("utf-8") if isinstance(key, str) else key
        self._pending[kb] = None

    @property
    def root(self) -> Node | None:
        """The last built root (None before the first build)."""
        return self._root

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs of the last build, in key order."""
        for k in self._keys:
            yield k, self._values[k]

    def _height(self, key: bytes) -> int:
        h = self._heights.get(key)
        if h is None:
            h = self._heights[key] = key_height(key)
        return h

    def _apply_pending(self) -> list[bytes]:
        pending = self._pending
        self._pending = {}
        changed = []
        for k, v in pending.items():
            old = self._values.get(k)
            if v == old:
                continue
            changed.append(k)
            if v is None:
                del self._values[k]
            else:
                self._values[k] = v
        changed.sort()
        if len(changed) > 64 and len(changed) * 8 > len(self._keys):
            # Bulk change: re-sort from scratch (cheaper than many list insertions).
            self._keys = sorted(self._values)
            by_h: dict[int, list[bytes]] = {}
            for k in self._keys:
                by_h.setdefault(self._height(k), []).append(k)
            self._by_height = by_h
        else:
            for k in changed:
                i = bisect_left(self._keys, k)
                present = i < len(self._keys) and self._keys[i] == k
                if k in self._values and not present:
                    self._keys.insert(i, k)
                    insort(self._by_height.setdefault(self._height(k), []), k)
                elif k not in self._values and present:
                    del self._keys[i]
                    h = self._height(k)
                    level = self._by_height[h]
                    del level[bisect_left(level, k)]
                    if not level:
                        del self._by_height[h]
        return changed

    def _changed_in(self, lo: bytes | None, hi: bytes | None) -> bool:
        changed = self._changed
        i = 0 if lo is None else bisect_right(changed, lo)
        return i < len(changed) and (hi is None or changed[i] < hi)

    def _has_keys(self, lo: bytes | None, hi: bytes | None) -> bool:
        keys = self._keys
        i = 0 if lo is None else bisect_right(keys, lo)
        return i < len(keys) and (hi is None or keys[i] < hi)

    def _build(self, h: int, lo: bytes | None, hi: bytes | None, old: Node | None) -> Node:
        if old is not None and old.height == h and not self._changed_in(lo, hi):
            return old
        level = self._by_height.get(h, ())
        i = 0 if lo is None else bisect_right(level, lo)
        j = len(level) if hi is None else bisect_left(level, hi)
        keys = list(level[i:j])
        values = [self._values[k] for k in keys]
        children: list[Node | None]
        if h == 0:
            children = [None] * (len(keys) + 1)
        else:
            old_children: dict[tuple[bytes | None, bytes | None], Node] = {}
            if old is not None and old.height == h:
                old_children = {(c.lo, c.hi): c for c in old.children if c is not None}
            bounds = [lo, *keys, hi]
            children = []
            for a, b in zip(bounds, bounds[1:], strict=False):
                if self._has_keys(a, b):
                    children.append(self._build(h - 1, a, b, old_children.get((a, b))))
                else:
                    children.append(None)
        block = encode_node(
            children[0].cid if children[0] is not None else None,
            keys,
            values,
            [c.cid if c is not None else None for c in children[1:]],
        )
        node = Node(cid_for_cbor(block), block, h, lo, hi, keys, values, children)
        self.new_nodes.append(node)
        return node

    def build(self) -> Node:
        """Apply pending changes and return the (possibly unchanged) root node."""
        self._changed = self._apply_pending()
        self.new_nodes = []
        if self._root is not None and not self._changed:
            return self._root
        if not self._keys:
            block = encode_node(None, [], [], [])
            self._root = Node(cid_for_cbor(block), block, 0, None, None, [], [], [None])
            self.new_nodes = [self._root]
            return self._root
        top = max(self._by_height)
        old = self._root if self._root is not None and self._root.keys else None
        self._root = self._build(top, None, None, old)
        self._changed = []
        return self._root


def build_mst(entries: Iterable[tuple[str | bytes, bytes]]) -> tuple[bytes, dict[bytes, bytes]]:
    """Build a whole tree from (key, value CID) pairs; return (root CID, cid -> node block)."""
    builder = TreeBuilder()
    for key, value in entries:
        builder.set(key, value)
    root = builder.build()
    return root.cid, {n.cid: n.block for n in root.iter_nodes()}


def proof_nodes(root: Node, key: str | bytes) -> list[Node]:
    """Nodes proving ``key``'s presence or absence: its path plus its two neighbours' paths.

    This is what a firehose diff needs so that receivers can invert the operation on ``key``.
    """
    kb = key.encode("utf-8") if isinstance(key, str) else key
    out: dict[bytes, Node] = {}
    node: Node | None = root
    while node is not None:
        out[node.cid] = node
        i = bisect_left(node.keys, kb)
        if i < len(node.keys) and node.keys[i] == kb:
            break
        node = node.children[i]
    for path in (_neighbour_path(root, kb, left=True), _neighbour_path(root, kb, left=False)):
        for n in path or ():
            out[n.cid] = n
    return list(out.values())


def _neighbour_path(node: Node, key: bytes, *, left: bool) -> list[Node] | None:
    """Path to the node holding the nearest key before (``left``) or after ``key``."""
    i = bisect_left(node.keys, key) if left else bisect_right(node.keys, key)
    child = node.children[i]
    if child is not None:
        sub = _neighbour_path(child, key, left=left)
        if sub is not None:
            return [node, *sub]
    if (left and i > 0) or (not left and i < len(node.keys)):
        return [node]
    return None


# ---------------------------------------------------------------- operation inversion


class _Partial:
    """A node of a partially loaded tree; children are CIDs (not loaded), nodes, or None."""

    __slots__ = ("cid", "keys", "values", "children")

    def __init__(
        self,
        cid: bytes | None,
        keys: list[bytes],
        values: list[bytes],
        children: list[bytes | _Partial | None],
    ) -> None:
        self.cid = cid  # None once modified
        self.keys = keys
        self.values = values
        self.children = children


_Ref = bytes | _Partial | None


class _Inverter:
    """Record-level edits on a partial MST (firehose diff), loading only the nodes touched."""

    def __init__(self, get_block: Callable[[bytes], bytes | None]) -> None:
        self._get_block = get_block

    def load(self, ref: bytes | _Partial, height: int) -> _Partial:
        if isinstance(ref, _Partial):
            return ref
        raw = self._get_block(ref)
        if raw is None:
            raise MissingBlock(ref)
        return self.from_decoded(ref, _decode_node(ref, raw), height)

    @staticmethod
    def from_decoded(
        ref: bytes,
        decoded: tuple[bytes | None, list[bytes], list[bytes], list[bytes | None]],
        height: int,
    ) -> _Partial:
        left, keys, values, trees = decoded
        for k in keys:
            if key_height(k) != height:
                raise MstError("MST key height does not match its node's height")
        if height == 0 and (left is not None or any(t is not None for t in trees)):
            raise MstError("MST node at height 0 links to a subtree")
        return _Partial(ref, keys, values, [left, *trees])

    @staticmethod
    def _prune(node: _Partial) -> _Partial | None:
        if not node.keys and node.children[0] is None:
            return None
        return node

    @staticmethod
    def _chain(node: _Partial | None, from_h: int, to_h: int) -> _Partial | None:
        """Wrap a subtree in empty intermediate nodes so it sits at height ``to_h``."""
        if node is None:
            return None
        for _ in range(to_h - from_h):
            node = _Partial(None, [], [], [node])
        return node

    def split(self, ref: _Ref, h: int, key: bytes) -> tuple[_Partial | None, _Partial | None]:
        """Split a subtree at ``key`` (not in it) into the parts before and after it."""
        if ref is None:
            return None, None
        node = self.load(ref, h)
        i = bisect_left(node.keys, key)
        if i < len(node.keys) and node.keys[i] == key:
            raise MstError("cannot split a tree at a key it contains")
        left_child, right_child = self.split(node.children[i], h - 1, key)
        left = _Partial(None, node.keys[:i], node.values[:i], [*node.children[:i], left_child])
        right = _Partial(
            None, node.keys[i:], node.values[i:], [right_child, *node.children[i + 1 :]]
        )
        return self._prune(left), self._prune(right)

    def merge(self, a: _Ref, b: _Ref, h: int) -> _Ref:
        """Join two adjacent subtrees of the same height (all of ``a`` sorts before ``b``)."""
        if a is None:
            return b
        if b is None:
            return a
        left = self.load(a, h)
        right = self.load(b, h)
        middle = self.merge(left.children[-1], right.children[0], h - 1)
        return _Partial(
            None,
            left.keys + right.keys,
            left.values + right.values,
            [*left.children[:-1], middle, *right.children[1:]],
        )

    def insert(self, ref: _Ref, h: int, key: bytes, kh: int, value: bytes) -> _Partial:
        if ref is None:
            leaf = _Partial(None, [key], [value], [None, None])
            chained = self._chain(leaf, kh, h)
            assert chained is not None
            return chained
        node = self.load(ref, h)
        i = bisect_left(node.keys, key)
        if i < len(node.keys) and node.keys[i] == key:
            raise MstError("operation inverts to creating a key that already exists")
        keys, values, children = list(node.keys), list(node.values), list(node.children)
        if kh == h:
            left, right = self.split(children[i], h - 1, key)
            keys.insert(i, key)
            values.insert(i, value)
            children[i : i + 1] = [left, right]
        else:
            children[i] = self.insert(children[i], h - 1, key, kh, value)
        return _Partial(None, keys, values, children)

    def delete(self, ref: _Ref, h: int, key: bytes, kh: int, expect: bytes) -> _Partial | None:
        if ref is None:
            raise MstError("operation inverts to deleting a key that is not in the tree")
        node = self.load(ref, h)
        i = bisect_left(node.keys, key)
        keys, values, children = list(node.keys), list(node.values), list(node.children)
        if kh == h:
            if i >= len(keys) or keys[i] != key:
                raise MstError("operation inverts to deleting a key that is not in the tree")
            if values[i] != expect:
                raise MstError("record CID in the tree does not match the operation")
            merged = self.merge(children[i], children[i + 1], h - 1)
            del keys[i], values[i]
            children[i : i + 2] = [merged]
        else:
            children[i] = self.delete(children[i], h - 1, key, kh, expect)
        return self._prune(_Partial(None, keys, values, children))

    def replace(
        self, ref: _Ref, h: int, key: bytes, kh: int, expect: bytes, value: bytes
    ) -> _Partial:
        if ref is None:
            raise MstError("updated key is not in the tree")
        node = self.load(ref, h)
        i = bisect_left(node.keys, key)
        keys, values, children = node.keys, list(node.values), list(node.children)
        if kh == h:
            if i >= len(keys) or keys[i] != key:
                raise MstError("updated key is not in the tree")
            if values[i] != expect:
                raise MstError("record CID in the tree does not match the operation")
            values[i] = value
        else:
            children[i] = self.replace(children[i], h - 1, key, kh, expect, value)
        return _Partial(None, list(keys), values, children)

    def finish(self, ref: _Ref, blocks: dict[bytes, bytes]) -> bytes | None:
        """Encode modified nodes bottom-up; return the subtree's CID."""
        if ref is None or isinstance(ref, bytes):
            return ref
        if ref.cid is not None:
            return ref.cid
        links = [self.finish(c, blocks) for c in ref.children]
        block = encode_node(links[0], ref.keys, ref.values, links[1:])
        cid = cid_for_cbor(block)
        blocks[cid] = block
        return cid


def invert_ops(
    data: bytes,
    get_block: Callable[[bytes], bytes | None],
    ops: Iterable[tuple[str, str, bytes | None, bytes | None]],
) -> bytes:
    """Undo record operations on the tree rooted at ``data``; return the resulting root CID.

    This is the firehose "operation inversion" check (specs/sync.md): applied to a commit's
    diff blocks and its ``(action, path, cid, prev)`` ops, the result must equal the event's
    ``prevData``. Along the way every op is checked against the new tree (created/updated
    paths hold ``cid``, deleted ones are absent). Raises ``MissingBlock`` when the diff lacks a
    node the inversion needs and ``MstError`` when the ops do not fit the tree.
    """
    inv = _Inverter(get_block)
    raw = get_block(data)
    if raw is None:
        raise MissingBlock(data)
    decoded = _decode_node(data, raw)
    keys = decoded[1]
    height = key_height(keys[0]) if keys else 0
    root = inv.from_decoded(data, decoded, height)
    if not root.keys and root.children[0] is not None:
        raise MstError("MST root is an empty node pointing to a subtree")
    tree: _Partial | None = root if root.keys else None
    for action, path, cid, prev in reversed(list(ops)):
        key = path.encode("utf-8")
        kh = key_height(key)
        if action == "create":
            if cid is None or tree is None or kh > height:
                raise MstError(f"created path {path} is not in the tree")
            tree = inv.delete(tree, height, key, kh, cid)
            # Trim empty roots left by the deletion.
            while tree is not None and not tree.keys:
                child = tree.children[0]
                height -= 1
                tree = inv.load(child, height) if child is not None else None
        elif action == "update":
            if cid is None or prev is None or tree is None or kh > height:
                raise MstError(f"update of {path} cannot be inverted")
            tree = inv.replace(tree, height, key, kh, cid, prev)
        elif action == "delete":
            if prev is None:
                raise MstError(f"delete of {path} has no prev CID to restore")
            if tree is None:
                tree = inv.insert(None, kh, key, kh, prev)
                height = kh
            elif kh > height:
                left, right = inv.split(tree, height, key)
                tree = _Partial(
                    None,
                    [key],
                    [prev],
                    [inv._chain(left, height, kh - 1), inv._chain(right, height, kh - 1)],
                )
                height = kh
            else:
                tree = inv.insert(tree, height, key, kh, prev)
        else:
            raise MstError(f"unknown operation {action!r}")
    if tree is None:
        return cid_for_cbor(encode_node(None, [], [], []))
    out = inv.finish(tree, {})
    assert out is not None
    return out


__all__ = [
    "DAG_CBOR_PREFIX",
    "MissingBlock",
    "MstError",
    "Node",
    "TreeBuilder",
    "build_mst",
    "common_prefix_len",
    "encode_node",
    "invert_ops",
    "key_height",
    "lookup",
    "proof_nodes",
    "walk",
]
