"""MST: key heights, the builder (byte-identical to the interop fixtures), the pruning walker."""

from __future__ import annotations

import random

import libipld
import pytest

from protocol.cid import cid_for_cbor, cid_from_str, cid_to_str
from protocol.data_model import Link, encode_dag_cbor_exact
from protocol.mst import (
    MAX_ENTRIES,
    MissingBlock,
    MstError,
    TreeBuilder,
    build_mst,
    common_prefix_len,
    encode_node,
    invert_ops,
    key_height,
    lookup,
    proof_nodes,
    walk,
)
from tests.conftest import reference_json, require_reference

PROOFS = reference_json("interop/firehose/commit-proof-fixtures.json")
LEAF = cid_for_cbor(b"\xa1ab\x01")


@pytest.mark.parametrize("fx", reference_json("interop/mst/key_heights.json"))
def test_key_heights(fx: dict) -> None:
    assert key_height(fx["key"]) == fx["height"]


@pytest.mark.parametrize("fx", reference_json("interop/mst/common_prefix.json"))
def test_common_prefix(fx: dict) -> None:
    assert common_prefix_len(fx["left"], fx["right"]) == fx["len"]


@pytest.mark.parametrize("fx", PROOFS, ids=lambda f: f["comment"])
def test_commit_proof_fixtures_byte_identical(fx: dict) -> None:
    leaf = cid_from_str(fx["leafValue"])
    tb = TreeBuilder()
    for k in fx["keys"]:
        tb.set(k, leaf)
    assert cid_to_str(tb.build().cid) == fx["rootBeforeCommit"]
    for k in fx["adds"]:
        tb.set(k, leaf)
    for k in fx["dels"]:
        tb.delete(k)
    after = tb.build()
    assert cid_to_str(after.cid) == fx["rootAfterCommit"]
    # A from-scratch build of the same key set gives the same root.
    keys = sorted((set(fx["keys"]) | set(fx["adds"])) - set(fx["dels"]))
    root, blocks = build_mst([(k, leaf) for k in keys])
    assert root == after.cid
    # Proof nodes for the changed keys are exactly the fixture's blocksInProof.
    proof = {n.cid for k in fx["adds"] + fx["dels"] for n in proof_nodes(after, k)}
    assert {cid_to_str(c) for c in proof} == set(fx["blocksInProof"])
    assert [k for k, _ in walk(root, blocks.get)] == keys


@pytest.mark.parametrize("fx", PROOFS, ids=lambda f: f["comment"])
def test_commit_proof_fixtures_invert_with_only_the_proof_blocks(fx: dict) -> None:
    leaf = cid_from_str(fx["leafValue"])
    keys = sorted((set(fx["keys"]) | set(fx["adds"])) - set(fx["dels"]))
    _root, every_block = build_mst([(k, leaf) for k in keys])
    proof = {cid_from_str(c): every_block[cid_from_str(c)] for c in fx["blocksInProof"]}
    after = cid_from_str(fx["rootAfterCommit"])
    adds, dels = set(fx["adds"]), set(fx["dels"])
    ops = [("create", k, leaf, None) for k in sorted(adds - dels)]
    ops += [("update", k, leaf, leaf) for k in sorted(adds & dels)]
    ops += [("delete", k, None, leaf) for k in sorted(dels - adds)]
    assert cid_to_str(invert_ops(after, proof.get, ops)) == fx["rootBeforeCommit"]
    # Leaving out a proof block makes the inversion fail loudly, never silently wrong.
    failures = 0
    for missing in proof:
        partial = {c: b for c, b in proof.items() if c != missing}
        try:
            result = invert_ops(after, partial.get, ops)
        except (MissingBlock, MstError):
            failures += 1
            continue
        assert cid_to_str(result) == fx["rootBeforeCommit"]
    assert failures >= 1  # at least the root is always needed


def test_invert_ops_rejects_ops_that_do_not_fit_the_tree() -> None:
    entries = sorted(
        (f"app.bsky.feed.post/{i:06d}", cid_for_cbor(str(i).encode())) for i in range(300)
    )
    root, blocks = build_mst(entries)
    path, cid = entries[5]
    other = cid_for_cbor(b"other")
    with pytest.raises(MstError):
        invert_ops(root, blocks.get, [("create", path, other, None)])  # wrong CID
    with pytest.raises(MstError):
        invert_ops(root, blocks.get, [("create", path + "x", cid, None)])  # not in tree
    with pytest.raises(MstError):
        invert_ops(root, blocks.get, [("delete", path, None, cid)])  # still in tree
    with pytest.raises(MstError):
        invert_ops(root, blocks.get, [("update", path, other, cid)])  # wrong current value
    with pytest.raises(MstError):
        invert_ops(root, blocks.get, [("delete", path + "x", None, None)])  # no prev
    with pytest.raises(MstError):
        invert_ops(root, blocks.get, [("move", path, cid, None)])
    # Undoing a create of every key empties the tree.
    ops = [("create", k, v, None) for k, v in entries]
    assert invert_ops(root, blocks.get, ops) == build_mst([])[0]
    # And re-creating them from an empty tree by inverting deletes rebuilds it exactly.
    empty, empty_blocks = build_mst([])
    ops = [("delete", k, None, v) for k, v in entries]
    assert invert_ops(empty, empty_blocks.get, ops) == root


def _example_keys() -> list[str]:
    return [k for k in require_reference("interop/mst/example_keys.txt").read_text().split() if k]


def test_example_keys_build_walk_and_canonical_nodes() -> None:
    keys = _example_keys()
    entries = sorted((k, cid_for_cbor(k.encode())) for k in keys)
    root, blocks = build_mst(entries)
    assert list(walk(root, blocks.get)) == entries
    for cid, block in blocks.items():
        # Our hand encoder agrees with libipld's canonical encoder, and CIDs match content.
        assert libipld.encode_dag_cbor(libipld.decode_dag_cbor(block)) == block
        assert cid_for_cbor(block) == cid
    # Order of insertion does not matter.
    shuffled = entries[:]
    random.Random(1).shuffle(shuffled)
    assert build_mst(shuffled)[0] == root


def test_empty_tree() -> None:
    root, blocks = build_mst([])
    assert blocks[root] == b"\xa2ae\x80al\xf6"
    assert list(walk(root, blocks.get)) == []


def test_incremental_equals_fresh_build_over_random_changes() -> None:
    rng = random.Random(7)
    tb = TreeBuilder()
    model: dict[str, bytes] = {}
    collections = ["app.bsky.feed.post", "fm.plyr.track", "fm.plyr.like", "app.bsky.graph.follow"]
    for step in range(60):
        for _ in range(rng.choice([1, 2, 5, 40, 300])):
            key = f"{rng.choice(collections)}/3k{rng.randrange(5000):06d}"
            if model and rng.random() < 0.3:
                victim = rng.choice(sorted(model))
                tb.delete(victim)
                model.pop(victim)
            else:
                value = cid_for_cbor(f"{key}-{step}".encode())
                tb.set(key, value)
                model[key] = value
        root = tb.build()
        expected_root, expected_blocks = build_mst(sorted(model.items()))
        assert root.cid == expected_root, f"step {step}"
        assert {n.cid for n in root.iter_nodes()} == set(expected_blocks)
    assert len(tb) == len(model)


def test_rebuild_reencodes_only_changed_paths() -> None:
    tb = TreeBuilder()
    for i in range(5000):
        tb.set(f"app.bsky.feed.post/{i:08d}", LEAF)
    total = sum(1 for _ in tb.build().iter_nodes())
    tb.set("app.bsky.feed.post/00002500x", LEAF)
    tb.build()
    assert 0 < len(tb.new_nodes) <= 12 < total


def _repo(n: int, plyr_every: int, seed: int = 3) -> tuple[bytes, dict[bytes, bytes], list]:
    rng = random.Random(seed)
    entries = []
    for i in range(n):
        if i % plyr_every == 0:
            coll = rng.choice(["fm.plyr.track", "fm.plyr.like", "fm.plyr.comment"])
        else:
            coll = rng.choice(["app.bsky.feed.post", "app.bsky.feed.like", "fm.plyrx.other"])
        entries.append((f"{coll}/3k{rng.getrandbits(40):012x}", cid_for_cbor(str(i).encode())))
    entries.sort()
    root, blocks = build_mst(entries)
    return root, blocks, entries


def test_walk_ranges_match_brute_force() -> None:
    root, blocks, entries = _repo(3000, 7)
    keys = [k for k, _ in entries]
    ranges = [
        ("fm.plyr.", "fm.plyr/"),
        (None, "app.bsky.feed.like/"),
        ("fm.plyr.like/", None),
        ("a", "b"),
        ("zzz", None),
        (keys[100], keys[101]),
        (keys[100], keys[100]),
    ]
    rng = random.Random(5)
    for _ in range(20):
        a, b = sorted(rng.sample(keys, 2))
        ranges.append((a, b))
    for start, end in ranges:
        got = list(walk(root, blocks.get, start=start, end=end))
        want = [
            (k, v) for k, v in entries if (start is None or k >= start) and (end is None or k < end)
        ]
        assert got == want, (start, end)
    assert lookup(root, blocks.get, keys[10]) == entries[10][1]
    assert lookup(root, blocks.get, keys[10] + "0") is None


def test_walk_prunes_to_the_requested_collections() -> None:
    root, blocks, entries = _repo(10_000, 100)
    fetched: list[bytes] = []

    def get(cid: bytes) -> bytes | None:
        fetched.append(cid)
        return blocks.get(cid)

    plyr = list(walk(root, get, start="fm.plyr.", end="fm.plyr/"))
    assert [k for k, _ in plyr] == [k for k, _ in entries if k.startswith("fm.plyr.")]
    assert len(plyr) == 100
    assert all(not k.startswith("fm.plyrx") for k, _ in plyr)
    assert len(fetched) < len(blocks) / 10, (len(fetched), len(blocks))


def test_missing_block_raises_with_cid() -> None:
    root, blocks, entries = _repo(2000, 10)
    leaf_parent = next(c for c, b in blocks.items() if c != root)
    partial = {c: b for c, b in blocks.items() if c != leaf_parent}
    with pytest.raises(MissingBlock) as info:
        list(walk(root, partial.get))
    assert info.value.cid == leaf_parent
    with pytest.raises(MissingBlock):
        list(walk(cid_for_cbor(b"nope"), {}.get))


# ---------------------------------------------------------------- malformed trees


def _keys_at(height: int, n: int, prefix: str = "k/") -> list[str]:
    out = []
    i = 0
    while len(out) < n:
        key = f"{prefix}{i}"
        if key_height(key) == height:
            out.append(key)
        i += 1
    return sorted(out)


def _node(entries: list[dict], left: bytes | None = None) -> bytes:
    return encode_dag_cbor_exact({"e": entries, "l": Link(left) if left else None})


def _entry(p: int, k: bytes, t: bytes | None = None, v: bytes = LEAF) -> dict:
    return {"p": p, "k": k, "v": Link(v), "t": Link(t) if t else None}


def _walk_blocks(*blocks: bytes, root_index: int = 0, **kw) -> list:
    store = {cid_for_cbor(b): b for b in blocks}
    return list(walk(cid_for_cbor(blocks[root_index]), store.get, **kw))


def test_valid_hand_built_node_walks() -> None:
    a, b = _keys_at(0, 2)
    assert _walk_blocks(_node([_entry(0, a.encode()), _entry(2, b.encode()[2:])])) == [
        (a, LEAF),
        (b, LEAF),
    ]


@pytest.mark.parametrize(
    "case",
    [
        "not_maximal",
        "p_too_big",
        "first_p_nonzero",
        "unsorted",
        "duplicate",
        "mixed_heights",
        "height0_with_subtree",
        "empty_root_with_left",
        "empty_inner_without_left",
        "child_wrong_height",
        "child_out_of_range",
        "value_not_cid",
        "not_a_node",
        "too_many_entries",
        "garbage",
    ],
)
def test_malformed_nodes_raise(case: str) -> None:
    a, b = _keys_at(0, 2)
    ab, bb = a.encode(), b.encode()
    (h1,) = _keys_at(1, 1)
    if case == "not_maximal":
        blocks = [_node([_entry(0, ab), _entry(0, bb)])]
    elif case == "p_too_big":
        blocks = [_node([_entry(0, ab), _entry(len(ab) + 1, b"x")])]
    elif case == "first_p_nonzero":
        blocks = [_node([_entry(1, ab[1:])])]
    elif case == "unsorted":
        blocks = [_node([_entry(0, bb), _entry(2, ab[2:])])]
    elif case == "duplicate":
        blocks = [_node([_entry(0, ab), _entry(len(ab), b"")])]
    elif case == "mixed_heights":
        lo, hi = sorted([a, h1])
        p = common_prefix_len(lo, hi)
        blocks = [_node([_entry(0, lo.encode()), _entry(p, hi.encode()[p:])])]
    elif case == "height0_with_subtree":
        child = _node([_entry(0, bb)])
        blocks = [_node([_entry(0, ab, t=cid_for_cbor(child))]), child]
    elif case == "empty_root_with_left":
        child = _node([_entry(0, ab)])
        blocks = [_node([], left=cid_for_cbor(child)), child]
    elif case == "empty_inner_without_left":
        child = _node([])
        blocks = [_node([_entry(0, h1.encode())], left=cid_for_cbor(child)), child]
    elif case == "child_wrong_height":
        (h2,) = _keys_at(2, 1, prefix="z/")
        child = _node([_entry(0, h2.encode())])  # height 2 under a height-1 node
        blocks = [_node([_entry(0, h1.encode(), t=cid_for_cbor(child))]), child]
    elif case == "child_out_of_range":
        lower = [k for k in _keys_at(0, 50) if k < h1][:1]
        child = _node([_entry(0, lower[0].encode())])  # sorts before h1 but hangs after it
        blocks = [_node([_entry(0, h1.encode(), t=cid_for_cbor(child))]), child]
    elif case == "value_not_cid":
        blocks = [encode_dag_cbor_exact({"e": [{"p": 0, "k": ab, "v": "x", "t": None}], "l": None})]
    elif case == "not_a_node":
        blocks = [encode_dag_cbor_exact({"x": 1})]
    elif case == "too_many_entries":
        many = _keys_at(0, MAX_ENTRIES + 1, prefix="")
        enc = []
        prev = b""
        for k in many:
            kb = k.encode()
            p = common_prefix_len(prev, kb)
            enc.append(_entry(p, kb[p:]))
            prev = kb
        blocks = [_node(enc)]
    else:
        blocks = [b"\xff\x00"]
    with pytest.raises(MstError):
        _walk_blocks(*blocks)


def test_height_checks_can_be_skipped_but_structure_is_still_checked() -> None:
    (h1,) = _keys_at(1, 1)
    a = _keys_at(0, 1)[0]
    mixed = sorted([a, h1])
    p = common_prefix_len(mixed[0], mixed[1])
    node = _node([_entry(0, mixed[0].encode()), _entry(p, mixed[1].encode()[p:])])
    with pytest.raises(MstError):
        _walk_blocks(node)
    assert [k for k, _ in _walk_blocks(node, verify_heights=False)] == mixed


def test_encode_node_matches_spec_shape() -> None:
    sub = cid_for_cbor(b"\xa0")
    block = encode_node(sub, [b"abc", b"abd"], [LEAF, LEAF], [None, sub])
    node = libipld.decode_dag_cbor(block)
    assert node == {
        "e": [
            {"k": b"abc", "p": 0, "t": None, "v": LEAF},
            {"k": b"d", "p": 2, "t": sub, "v": LEAF},
        ],
        "l": sub,
    }
    assert libipld.encode_dag_cbor(node) == block
