"""Build real, signed atproto repositories for tests and benchmarks.

    key = PrivateKey.generate("k256")
    repo = RepoBuilder("did:plc:abc", key)
    repo.put("fm.plyr.track", "3kabc", {"$type": "fm.plyr.track", "title": "x", ...})
    result = repo.commit()        # CommitResult: diff CAR, ops, signed commit, prevData
    frame = result.firehose_frame(seq=1)   # a subscribeRepos #commit websocket message
    car = repo.full_car()         # the whole repo, as com.atproto.sync.getRepo returns it

Records are given in JSON data-model form (``{"$link": ...}``, ``{"$bytes": ...}``; ``Link`` and
bytes values also accepted) or as an already-encoded DAG-CBOR block (``bytes``). Every block is
encoded canonically, the MST is byte-identical to other implementations (checked against the
interop fixtures), and the diff CAR holds what a PDS sends: the commit, the created/updated
records, the new MST nodes and the proof nodes needed for MST inversion.

It is incremental: a commit re-encodes only the MST nodes on the changed paths, so building
firehose traffic on a 100k-record repo is cheap. Put 100k records then commit once to build a
big repo quickly.

For a repo at one commit in a chosen CAR block order (the backfill tests and benchmarks):

    repo = build_repo("did:plc:abc", [("fm.plyr.track", tid(1), track(1)), ...])
    repo.car("shuffled")          # or "tree": commit, MST nodes, records
    repo.plyr_records()           # "collection/rkey" -> CID string of each fm.plyr.* record

`tid(n)`, `track`, `like` and `post` make stable keys and small records for those.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from protocol.car import car_header, car_section, write_car
from protocol.cid import cid_for_cbor, cid_to_str
from protocol.commit import encode_commit, sign_commit
from protocol.crypto import PrivateKey
from protocol.data_model import Link, encode_dag_cbor_exact, json_to_dag_cbor
from protocol.mst import Node, TreeBuilder, proof_nodes

_TID_CHARS = "234567abcdefghijklmnopqrstuvwxyz"


class _Signer(Protocol):
    def sign(self, data: bytes) -> bytes: ...


def tid_from_micros(micros: int, clock_id: int = 0) -> str:
    """A TID string: 53-bit microsecond timestamp and 10-bit clock id, sortable base32."""
    n = (micros << 10) | (clock_id & 0x3FF)
    out = []
    for _ in range(13):
        out.append(_TID_CHARS[n & 31])
        n >>= 5
    return "".join(reversed(out))


class TidClock:
    """Monotonic TID source (never repeats, even when called faster than the clock ticks)."""

    def __init__(self, clock_id: int = 0) -> None:
        self._last = 0
        self._clock_id = clock_id

    def next(self) -> str:
        now = time.time_ns() // 1000
        self._last = now if now > self._last else self._last + 1
        return tid_from_micros(self._last, self._clock_id)


class Op(NamedTuple):
    """A record operation as listed in a firehose #commit event."""

    action: str  # "create" | "update" | "delete"
    path: str
    cid: bytes | None
    prev: bytes | None


@dataclass
class CommitResult:
    did: str
    commit_cid: bytes
    commit_block: bytes
    rev: str
    since: str | None  # rev of the previous commit
    data: bytes  # MST root CID of this commit
    prev_data: bytes | None  # MST root CID of the previous commit
    car_bytes: bytes  # diff CAR ("CAR slice"), commit first root
    blocks: dict[bytes, bytes]  # every block in car_bytes
    ops: list[Op] = field(default_factory=list)

    def firehose_body(self, seq: int, time_str: str = "2026-01-01T00:00:00.000Z") -> dict[str, Any]:
        """The #commit payload in IPLD form (links as ``Link``)."""
        ops = []
        for op in self.ops:
            entry: dict[str, Any] = {
                "action": op.action,
                "path": op.path,
                "cid": Link(op.cid) if op.cid is not None else None,
            }
            if op.prev is not None:
                entry["prev"] = Link(op.prev)
            ops.append(entry)
        body: dict[str, Any] = {
            "seq": seq,
            "rebase": False,
            "tooBig": False,
            "repo": self.did,
            "commit": Link(self.commit_cid),
            "rev": self.rev,
            "since": self.since,
            "blocks": self.car_bytes,
            "ops": ops,
            "blobs": [],
            "time": time_str,
        }
        if self.prev_data is not None:
            body["prevData"] = Link(self.prev_data)
        return body

    def firehose_frame(self, seq: int, time_str: str = "2026-01-01T00:00:00.000Z") -> bytes:
        """A complete subscribeRepos websocket message: header + #commit payload."""
        header = encode_dag_cbor_exact({"op": 1, "t": "#commit"})
        return header + encode_dag_cbor_exact(self.firehose_body(seq, time_str))


class RepoBuilder:
    """An in-memory repository that produces signed commits, diff CARs and full CARs."""

    def __init__(self, did: str, key: _Signer, *, clock: TidClock | None = None) -> None:
        self.did = did
        self.key = key
        self.clock = clock or TidClock()
        self._tree = TreeBuilder()
        self._records: dict[bytes, bytes] = {}  # record cid -> block
        self._pending: dict[str, bytes | None] = {}  # path -> new record cid (None: delete)
        self.head: CommitResult | None = None

    # ------------------------------------------------------------ mutations

    def put(self, collection: str, rkey: str, record: dict[str, Any] | bytes) -> bytes:
        """Create or update a record; returns its CID. Takes effect at the next ``commit()``."""
        block = record if isinstance(record, bytes) else json_to_dag_cbor(record)
        cid = cid_for_cbor(block)
        self._records[cid] = block
        self._pending[f"{collection}/{rkey}"] = cid
        return cid

    def delete(self, collection: str, rkey: str) -> None:
        """Delete a record (a no-op at commit time if it does not exist)."""
        self._pending[f"{collection}/{rkey}"] = None

    def get(self, collection: str, rkey: str) -> bytes | None:
        """The committed record block at a path, or None."""
        cid = self._committed(f"{collection}/{rkey}")
        return self._records.get(cid) if cid is not None else None

    def _committed(self, path: str) -> bytes | None:
        root = self._tree.root
        if root is None:
            return None
        kb = path.encode("utf-8")
        node: Node | None = root
        while node is not None:
            i = bisect_left(node.keys, kb)
            if i < len(node.keys) and node.keys[i] == kb:
                return node.values[i]
            node = node.children[i]
        return None

    # ------------------------------------------------------------ commits

    def commit(self, *, rev: str | None = None) -> CommitResult:
        """Apply pending changes, sign a new commit, and return it with its diff CAR."""
        prev_root = self._tree.root
        ops: list[Op] = []
        for path, cid in self._pending.items():
            old = self._committed(path)
            if old == cid:
                continue
            if cid is None:
                ops.append(Op("delete", path, None, old))
                self._tree.delete(path)
            else:
                ops.append(Op("create" if old is None else "update", path, cid, old))
                self._tree.set(path, cid)
        self._pending = {}
        root = self._tree.build()
        rev = rev or self.clock.next()
        commit = sign_commit(did=self.did, data=root.cid, rev=rev, key=self.key)
        commit_block = encode_commit(commit)
        commit_cid = cid_for_cbor(commit_block)

        blocks: dict[bytes, bytes] = {commit_cid: commit_block}
        # MST nodes new in this revision, plus each changed key's proof (path + neighbours).
        for node in self._tree.new_nodes:
            blocks[node.cid] = node.block
        if prev_root is not None:  # on the first commit every node is new anyway
            for op in ops:
                for node in proof_nodes(root, op.path):
                    blocks[node.cid] = node.block
        for op in ops:
            if op.cid is not None:
                blocks[op.cid] = self._records[op.cid]
        car = write_car([commit_cid], blocks.items())
        result = CommitResult(
            did=self.did,
            commit_cid=commit_cid,
            commit_block=commit_block,
            rev=rev,
            since=self.head.rev if self.head is not None else None,
            data=root.cid,
            prev_data=prev_root.cid if prev_root is not None else None,
            car_bytes=car,
            blocks=blocks,
            ops=ops,
        )
        self.head = result
        return result

    # ------------------------------------------------------------ exports

    def full_car(self) -> bytes:
        """The whole repo at the last commit, blocks in the streamable pre-order."""
        if self.head is None:
            raise ValueError("no commit yet: call commit() first")
        root = self._tree.root
        assert root is not None
        return write_car([self.head.commit_cid], self._ordered_blocks(root))

    def _ordered_blocks(self, root: Node) -> list[tuple[bytes, bytes]]:
        assert self.head is not None
        out: list[tuple[bytes, bytes]] = [(self.head.commit_cid, self.head.commit_block)]
        seen: set[bytes] = set()
        records = self._records
        # Pre-order: node, left subtree, then each entry's record followed by its subtree.
        stack: list[Node | bytes] = [root]
        while stack:
            item = stack.pop()
            if isinstance(item, Node):
                out.append((item.cid, item.block))
                tail: list[Node | bytes] = []
                if item.children[0] is not None:
                    tail.append(item.children[0])
                for value, child in zip(item.values, item.children[1:], strict=True):
                    tail.append(value)
                    if child is not None:
                        tail.append(child)
                stack.extend(reversed(tail))
            elif item not in seen:
                seen.add(item)
                out.append((item, records[item]))
        return out

    def records(self) -> dict[str, tuple[bytes, bytes]]:
        """Every committed record: "collection/rkey" -> (record CID, block), in key order."""
        return {key.decode(): (cid, self._records[cid]) for key, cid in self._tree.items()}

    def mst_nodes(self) -> dict[bytes, bytes]:
        """Every MST node of the committed tree: CID -> block."""
        root = self._tree.root
        return {} if root is None else {node.cid: node.block for node in root.iter_nodes()}

    def blocks(self) -> dict[bytes, bytes]:
        """All blocks of the current repo (commit, MST nodes, records), by CID."""
        root = self._tree.root
        if root is None or self.head is None:
            return {}
        return dict(self._ordered_blocks(root))


# ---------------------------------------------------------------- one-commit repos and records

# 2023-11-14 in microseconds: `tid(n)` keys sort in `n` order and never change between runs.
_TID_BASE_MICROS = 1_700_000_000_000_000


def tid(n: int) -> str:
    """A fixed, valid TID whose order follows `n` (record keys and revs for tests)."""
    return tid_from_micros(_TID_BASE_MICROS + (n >> 10), n & 0x3FF)


def track(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "$type": "fm.plyr.track",
        "title": f"Track {i}",
        "artist": "Someone",
        "fileType": "mp3",
        "audioUrl": f"https://cdn.example.com/a/{i}.mp3",
        "createdAt": "2024-05-01T12:00:00.000Z",
        **extra,
    }


def like(subject_uri: str, subject_cid: str) -> dict[str, Any]:
    return {
        "$type": "fm.plyr.like",
        "subject": {"uri": subject_uri, "cid": subject_cid},
        "createdAt": "2024-05-02T12:00:00.000Z",
    }


def post(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "$type": "app.bsky.feed.post",
        "text": f"post {i} " + "lorem ipsum dolor sit amet " * rng.randint(1, 8),
        "createdAt": "2024-05-01T12:00:00.000Z",
        "langs": ["en"],
    }


@dataclass
class BuiltRepo:
    """A repo at one signed commit (from `build_repo`), written as a CAR in a chosen block order."""

    did: str
    key: PrivateKey
    rev: str
    commit_cid: bytes
    commit_block: bytes
    root: bytes  # MST root CID
    nodes: dict[bytes, bytes]  # MST node CID -> block
    records: dict[str, tuple[bytes, bytes]]  # "collection/rkey" -> (record CID, block)

    def plyr_records(self) -> dict[str, str]:
        """ "collection/rkey" -> CID string of every fm.plyr.* record."""
        return {k: cid_to_str(c) for k, (c, _b) in self.records.items() if k.startswith("fm.plyr.")}

    def sections(self, order: str = "shuffled", seed: int = 7) -> list[tuple[bytes, bytes]]:
        """(CID, block) of every distinct block, commit first. "tree": MST nodes, then records;
        "shuffled": the rest in a seeded random order (a CAR reader cannot rely on any order)."""
        if order not in ("tree", "shuffled"):
            raise ValueError(f"unknown block order {order!r}")
        seen: set[bytes] = set()
        body: list[tuple[bytes, bytes]] = []
        for cid, block in [*self.nodes.items(), *self.records.values()]:
            if cid not in seen:  # records with the same content share one block
                seen.add(cid)
                body.append((cid, block))
        if order == "shuffled":
            random.Random(seed).shuffle(body)
        return [(self.commit_cid, self.commit_block), *body]

    def car(self, order: str = "shuffled") -> bytes:
        return b"".join(self.iter_car(order))

    def iter_car(self, order: str = "shuffled") -> Iterator[bytes]:
        yield car_header([self.commit_cid])
        for cid, block in self.sections(order):
            yield car_section(cid, block)


def build_repo(
    did: str,
    records: Iterable[tuple[str, str, dict[str, Any] | bytes]],
    *,
    key: PrivateKey | None = None,
    rev: str | None = None,
) -> BuiltRepo:
    """A repo holding `records` ((collection, rkey, value) triples) at one commit signed by `key`
    (a new K-256 key by default), at `rev` (default `tid(10_000_000)`)."""
    key = key or PrivateKey.generate("k256")
    builder = RepoBuilder(did, key)
    for collection, rkey, value in records:
        builder.put(collection, rkey, value)
    head = builder.commit(rev=rev or tid(10_000_000))
    return BuiltRepo(
        did=did,
        key=key,
        rev=head.rev,
        commit_cid=head.commit_cid,
        commit_block=head.commit_block,
        root=head.data,
        nodes=builder.mst_nodes(),
        records=builder.records(),
    )


def mixed_repo(
    did: str, total: int, plyr_every: int = 100, seed: int = 1, key: PrivateKey | None = None
) -> BuiltRepo:
    """`total` records, one in `plyr_every` an fm.plyr.track, the rest bsky posts."""
    rng = random.Random(seed)
    recs: list[tuple[str, str, dict[str, Any] | bytes]] = []
    for i in range(total):
        if i % plyr_every == 0:
            recs.append(("fm.plyr.track", tid(i), track(i)))
        else:
            recs.append(("app.bsky.feed.post", tid(i), post(i, rng)))
    return build_repo(did, recs, key=key)
