"""Reading an MST: a walk over a key range that fetches only the subtrees that range can meet.

``walk`` checks what it reads (key compression, sort order, heights, entry counts) and raises
``MstError`` on malformed nodes and ``MissingBlock`` when ``get_block`` has no such node. It
does not re-hash blocks: ``get_block`` should serve verified blocks (``protocol.car.read_car``
verifies by default). Listing one collection of a large repo fetches a handful of nodes per
level instead of the whole tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from protocol.mst.node import MissingBlock, MstError, decode_node, key_height

_ROOT = -1  # "expected height" of the root: unknown until its keys are read


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
        left, keys, values, trees = decode_node(cid, raw)
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
