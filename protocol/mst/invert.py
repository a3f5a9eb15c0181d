"""MST operation inversion: undo a commit's record operations on the partial tree of its diff.

The firehose "inductive" check (specs/sync.md): applied to a commit's diff blocks and its
``(action, path, cid, prev)`` ops, the root reached must equal the event's ``prevData``. Only
the nodes the inversion touches are loaded.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from protocol.cid import cid_for_cbor
from protocol.mst.node import (
    DecodedNode,
    MissingBlock,
    MstError,
    decode_node,
    encode_node,
    key_height,
)


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
        return self.from_decoded(ref, decode_node(ref, raw), height)

    @staticmethod
    def from_decoded(
        ref: bytes,
        decoded: DecodedNode,
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
    decoded = decode_node(data, raw)
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
