"""Signed repos as CAR bytes for the backfill tests and benchmarks (real MST, real signatures).

Kept small on purpose: records are DAG-CBOR encoded with libipld, the tree is protocol.mst's
builder, the commit is signed with a real key. `order` decides the block order of the CAR
("tree": commit, nodes, records; "shuffled": the kind of order a PDS produces).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import libipld

from protocol.car import car_header, car_section
from protocol.cid import cid_for_cbor, cid_to_str
from protocol.commit import encode_commit, sign_commit
from protocol.crypto import PrivateKey
from protocol.mst import build_mst

_TID_CHARS = "234567abcdefghijklmnopqrstuvwxyz"


def tid(n: int) -> str:
    """A valid TID whose order follows `n`."""
    out = []
    value = 1_700_000_000_000_000 * 1024 + n
    for _ in range(13):
        out.append(_TID_CHARS[value & 31])
        value >>= 5
    return "".join(reversed(out))


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
    did: str
    key: PrivateKey
    rev: str
    commit_cid: bytes
    root: bytes
    nodes: dict[bytes, bytes]
    records: dict[str, tuple[bytes, bytes]]  # "collection/rkey" -> (cid, block)
    extra_blocks: list[tuple[bytes, bytes]] = field(default_factory=list)
    commit_block: bytes = b""

    def plyr_records(self) -> dict[str, str]:
        """ "collection/rkey" -> cid string of every fm.plyr.* record."""
        return {k: cid_to_str(c) for k, (c, _b) in self.records.items() if k.startswith("fm.plyr.")}

    def sections(self, order: str = "shuffled", seed: int = 7) -> list[tuple[bytes, bytes]]:
        seen: set[bytes] = set()
        body: list[tuple[bytes, bytes]] = []
        for cid, block in [*self.nodes.items(), *self.records.values(), *self.extra_blocks]:
            if cid not in seen:
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
    records: Iterable[tuple[str, str, dict[str, Any]]],
    *,
    key: PrivateKey | None = None,
    rev: str | None = None,
) -> BuiltRepo:
    """A signed repo holding `records` ((collection, rkey, value) triples)."""
    key = key or PrivateKey.generate("k256")
    blocks: dict[str, tuple[bytes, bytes]] = {}
    for collection, rkey, value in records:
        block = libipld.encode_dag_cbor(value)
        blocks[f"{collection}/{rkey}"] = (cid_for_cbor(block), block)
    root, nodes = build_mst((k, c) for k, (c, _b) in blocks.items())
    rev = rev or tid(10_000_000)
    commit = sign_commit(did=did, data=root, rev=rev, key=key)
    commit_block = encode_commit(commit)
    return BuiltRepo(
        did=did, key=key, rev=rev, commit_cid=cid_for_cbor(commit_block), root=root,
        nodes=nodes, records=blocks, commit_block=commit_block,
    )  # fmt: skip


def mixed_repo(
    did: str, total: int, plyr_every: int = 100, seed: int = 1, key: PrivateKey | None = None
) -> BuiltRepo:
    """`total` records, one in `plyr_every` an fm.plyr.track, the rest bsky posts."""
    rng = random.Random(seed)
    recs = []
    for i in range(total):
        if i % plyr_every == 0:
            recs.append(("fm.plyr.track", tid(i), track(i)))
        else:
            recs.append(("app.bsky.feed.post", tid(i), post(i, rng)))
    return build_repo(did, recs, key=key)
