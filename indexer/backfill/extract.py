"""From a repo CAR (streamed) to the verified `fm.plyr.*` records (and network plays: teal.fm
play records, indexer/network_plays.py) of its signed commit.

Repo exports can be hundreds of megabytes and come in no useful block order (a PDS writes them
by rev and CID, not tree order), so the CAR is read in one pass into a `CarIndex`
(car_index.py): the bytes are stored (in memory up to a limit, then in a temporary file) and the
sections framed as they arrive, remembering where blocks are. Nothing is hashed or decoded then.

`extract_records` then checks the commit (hash, DID, signature: protocol.sync.verify_repo_commit), walks the MST only where
`fm.plyr.*` and network play keys can be (`protocol.mst.walk` prunes subtrees by key range) and
reads just those records. Every block used is hashed against its CID on the bytes received. The
section index keeps the blocks that say `fm.plyr.`; a network play's record block is found by
the second pass over the CAR that any block the index did not keep gets.

A CAR that ends inside a section is truncated; a block used whose bytes do not hash to its CID
is a mismatch: both are `CarError`, a failed signature is `ExtractError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import libipld

from indexer.backfill.car_index import CarIndex
from indexer.backfill.car_store import DEFAULT_MEMORY_LIMIT, CarStore
from indexer.network_plays import NETWORK_PLAY_COLLECTIONS
from protocol.car import CarError
from protocol.cid import cid_to_str, is_blessed
from protocol.data_model import DataModelError, block_to_json
from protocol.mst import MissingBlock, MstError, walk
from protocol.sync import VerificationError, verify_repo_commit

KEY_START = "fm.plyr."
KEY_END = "fm.plyr/"  # "/" sorts right after ".": [start, end) is every fm.plyr.* collection
# The key ranges walked: every fm.plyr.* collection, and each network play collection
# ("0" sorts right after "/": [c/, c0) is every key of collection c).
KEY_RANGES = ((KEY_START, KEY_END), *((f"{c}/", f"{c}0") for c in NETWORK_PLAY_COLLECTIONS))

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "CarIndex",
    "ExtractError",
    "PlyrRecord",
    "RepoSnapshot",
    "extract_from_bytes",
    "extract_records",
]


class ExtractError(Exception):
    """The repo cannot be trusted or read (bad commit, bad signature, broken tree)."""


@dataclass(slots=True)
class PlyrRecord:
    collection: str
    rkey: str
    cid: str
    value: dict[str, Any] | None  # None when the block is not a valid DAG-CBOR record
    problem: str | None = None


@dataclass(slots=True)
class RepoSnapshot:
    """The plyr records of a repo at one signed commit."""

    did: str
    rev: str
    commit_cid: str
    records: list[PlyrRecord] = field(default_factory=list)
    car_bytes: int = 0


def extract_records(
    index: CarStore, did: str, signing_key: Any | None, *, verify_signature: bool = True
) -> RepoSnapshot:
    """Check the commit of an indexed CAR and return its `fm.plyr.*` records, verified.

    `signing_key` is the repo's #atproto key (protocol.crypto.PublicKey); the signature check
    can be switched off only explicitly (`verify_signature=False`).
    """
    if not index.roots:
        raise CarError("CAR has no root")
    commit_cid = index.roots[0]
    raw = index.get_commit()
    if raw is None:
        index.rescan({commit_cid})
        raw = index.get_verified(commit_cid)
    if raw is None:
        raise CarError("CAR does not contain its root commit block")
    if verify_signature and signing_key is None:
        raise ExtractError("no signing key to check the commit signature with")
    try:
        commit = verify_repo_commit(raw, commit_cid, did, signing_key if verify_signature else None)
    except VerificationError as exc:
        if exc.kind == "signature":
            raise ExtractError(
                "bad commit signature (not signed by the DID's #atproto key)"
            ) from exc
        if exc.kind == "car":
            raise CarError(str(exc)) from exc
        raise ExtractError(f"bad commit: {exc}") from exc

    get = index.get_verified
    missing_nodes: set[bytes] = set()
    entries: list[tuple[str, bytes]] = []
    for _attempt in range(2):
        try:
            entries = [e for start, end in KEY_RANGES for e in walk(commit.data, get, start=start, end=end)]
            break
        except MissingBlock as exc:
            # Not indexed (an unusual node encoding): one more framing pass, then give up.
            if exc.cid in missing_nodes or index.rescan({exc.cid}) == 0:
                raise CarError(f"CAR is missing MST node {cid_to_str(exc.cid)}") from exc
            missing_nodes.add(exc.cid)
        except MstError as exc:
            raise ExtractError(f"malformed MST: {exc}") from exc

    wanted = [v for _k, v in entries if not index.has(v)]
    if wanted:
        index.rescan(set(wanted))
    snapshot = RepoSnapshot(
        did=did, rev=commit.rev, commit_cid=cid_to_str(commit_cid), car_bytes=index.size
    )
    for key, value_cid in entries:
        collection, _, rkey = key.partition("/")
        raw = get(value_cid)
        if raw is None:
            raise CarError(f"CAR is missing the record block of {key}")
        # libipld's base32 encoder: ~15x faster than the pure-Python one, same string.
        cid_str = libipld.encode_cid(value_cid) if is_blessed(value_cid) else cid_to_str(value_cid)
        try:
            value = block_to_json(raw)
        except DataModelError as exc:
            snapshot.records.append(
                PlyrRecord(collection, rkey, cid_str, None, f"undecodable record: {exc}")
            )
            continue
        if not isinstance(value, dict):
            snapshot.records.append(
                PlyrRecord(collection, rkey, cid_str, None, "record is not a map")
            )
            continue
        snapshot.records.append(PlyrRecord(collection, rkey, cid_str, value))
    return snapshot


def extract_from_bytes(
    data: bytes, did: str, signing_key: Any | None, *, verify_signature: bool = True
) -> RepoSnapshot:
    """Whole-CAR convenience form (tests, small repos, the benchmark)."""
    with CarIndex.from_bytes(data) as index:
        return extract_records(index, did, signing_key, verify_signature=verify_signature)
