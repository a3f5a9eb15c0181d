"""Building MSTs: ``TreeBuilder`` keeps a key -> CID mapping and re-encodes only what changed.

On rebuild, every subtree whose key range saw no change is reused, so a commit touching a few
keys re-encodes only the nodes on their paths (tests/support/repo_builder.py relies on this);
``build_mst`` is the one-shot form and ``proof_nodes`` picks the nodes a firehose diff carries.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator

from protocol.cid import cid_for_cbor
from protocol.mst.node import MstError, encode_node, key_height


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
