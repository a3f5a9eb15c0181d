"""Merkle Search Trees (repo format v3), the structure under every repo commit.

- ``protocol.mst.node``: key heights and the node block codec;
- ``protocol.mst.walk``: ``walk``/``lookup``, reading a key range and fetching only the
  subtrees it can meet;
- ``protocol.mst.build``: ``TreeBuilder``/``build_mst`` and firehose ``proof_nodes``;
- ``protocol.mst.invert``: ``invert_ops``, the sync spec's operation-inversion check.

Subtrees sit exactly one height lower than their parent; empty intermediate nodes keep that
rule when a level has no keys. Everything used outside is importable from ``protocol.mst``.
"""

from protocol.cid import DAG_CBOR_PREFIX
from protocol.mst.build import Node, TreeBuilder, build_mst, proof_nodes
from protocol.mst.invert import invert_ops
from protocol.mst.node import (
    MAX_ENTRIES,
    MAX_HEIGHT,
    MissingBlock,
    MstError,
    common_prefix_len,
    decode_node,
    encode_node,
    key_height,
)
from protocol.mst.walk import lookup, walk

__all__ = [
    "DAG_CBOR_PREFIX",
    "MAX_ENTRIES",
    "MAX_HEIGHT",
    "MissingBlock",
    "MstError",
    "Node",
    "TreeBuilder",
    "build_mst",
    "common_prefix_len",
    "decode_node",
    "encode_node",
    "invert_ops",
    "key_height",
    "lookup",
    "proof_nodes",
    "walk",
]
