"""Verification of matched commits: CAR blocks against their CIDs, the signed commit against
the repo's signing key, and the commit's fields against the message; then ops -> RecordOps.

Only commits that carry `fm.plyr.*` ops get here (about 0.1% of the network), so the CAR is
parsed, and every block used (the commit and the records) is checked against the sha-256 of
the bytes received, never re-encoded. (MST nodes are not walked: see docs/invariants.md.)

Signing keys come from the IdentityResolver (did:plc and did:web, cached). A failed check is
retried once with a freshly resolved key (the repo may have rotated it); `#identity` events
invalidate the cached document. With `verify_signatures=False` (`--no-verify`) signatures are
not checked; CIDs still are.
"""

from __future__ import annotations

import logging
from typing import Any

import libipld
import orjson

from indexer.frames import CommitEvent
from indexer.records import ACTIONS, RecordOp
from protocol.car import CarError, read_car
from protocol.cid import cid_to_str, verify_block
from protocol.commit import CommitError, parse_commit, verify_commit_signature
from protocol.data_model import block_to_json

log = logging.getLogger("plyr.indexer")


_TAG_42 = b"\xd8\x2a"  # a CID link in DAG-CBOR


def record_json(raw: bytes) -> Any:
    """The JSON data-model form of a record block, exactly.

    Fast path (nearly every plyr record): libipld decodes it; when the block holds no CID link
    (no tag 42 in its bytes) and the value has no byte strings (orjson refuses bytes), the
    decoded value already is the JSON form. Otherwise protocol.data_model's exact decoder
    keeps links and byte strings apart (libipld returns both as bytes).
    """
    try:
        value = libipld.decode_dag_cbor(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    if _TAG_42 not in raw:
        try:
            orjson.dumps(value)
            return value
        except TypeError:
            pass
    return block_to_json(raw)


def _cid_str(cid: bytes) -> str:
    # libipld's encoder is much faster than base64 + str for the blessed 36-byte CIDs.
    return libipld.encode_cid(cid) if len(cid) == 36 else cid_to_str(cid)


class VerifyError(Exception):
    """The commit cannot be trusted; `kind` is the metric label (car, commit, signature, identity)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Verifier:
    def __init__(self, resolver: Any | None, *, verify_signatures: bool = True) -> None:
        if verify_signatures and resolver is None:
            raise ValueError("signature checks need an identity resolver")
        self.resolver = resolver
        self.verify_signatures = verify_signatures

    def invalidate(self, did: str) -> None:
        """An `#identity` event: the next commit of `did` uses a freshly resolved key."""
        if self.resolver is not None:
            self.resolver.invalidate(did)

    async def _signature_ok(self, did: str, raw_commit: bytes) -> bool:
        from protocol.identity import IdentityError

        try:
            key = await self.resolver.signing_key(did)  # type: ignore[union-attr]
            if verify_commit_signature(raw_commit, key):
                return True
            # Maybe the key rotated and our cached document is old: one retry with a fresh one.
            fresh = await self.resolver.signing_key(did, fresh=True)  # type: ignore[union-attr]
            if fresh == key:
                return False
            return verify_commit_signature(raw_commit, fresh)
        except IdentityError as exc:
            raise VerifyError("identity", f"cannot get the signing key of {did}: {exc}") from None

    async def commit_ops(self, ev: CommitEvent) -> list[RecordOp]:
        """The verified record ops of a matched commit; VerifyError when anything is off."""
        try:
            # Framing only: the blocks we use are hashed below (MST nodes are not used).
            car = read_car(ev.blocks, verify=False)
        except (CarError, ValueError) as exc:
            raise VerifyError("car", f"bad CAR slice: {exc}") from None
        if ev.commit is None:
            raise VerifyError("commit", "message has no commit CID")
        raw_commit = car.blocks.get(ev.commit)
        if raw_commit is None:
            raise VerifyError("car", "commit block missing from the CAR slice")
        if not verify_block(ev.commit, raw_commit):
            raise VerifyError("car", "commit block does not match its CID")
        try:
            commit = parse_commit(raw_commit)
        except CommitError as exc:
            raise VerifyError("commit", str(exc)) from None
        if commit.did != ev.repo:
            raise VerifyError("commit", f"commit is for {commit.did}, message says {ev.repo}")
        if commit.rev != ev.rev:
            raise VerifyError("commit", f"commit rev {commit.rev} != message rev {ev.rev}")
        if self.verify_signatures and not await self._signature_ok(ev.repo, raw_commit):
            raise VerifyError("signature", f"commit signature of {ev.repo} does not verify")

        out: list[RecordOp] = []
        for op in ev.ops:
            action, path = op.get("action"), op.get("path")
            if action not in ACTIONS or not isinstance(path, str) or path.count("/") != 1:
                raise VerifyError("commit", f"malformed op {action!r} {path!r}")
            collection, rkey = path.split("/")
            if action == "delete":
                out.append(RecordOp("delete", ev.repo, collection, rkey, ev.rev, None, None, ev.seq))
                continue
            cid = op.get("cid")
            if not isinstance(cid, bytes):
                raise VerifyError("commit", f"{action} of {path} without a record CID")
            raw = car.blocks.get(cid)
            if raw is None:
                raise VerifyError("car", f"record block of {path} missing from the CAR slice")
            if not verify_block(cid, raw):
                raise VerifyError("car", f"record block of {path} does not match its CID")
            try:
                record = record_json(raw)
            except ValueError as exc:
                raise VerifyError("car", f"record block of {path} is not valid DAG-CBOR: {exc}") from None
            if not isinstance(record, dict):
                raise VerifyError("car", f"record block of {path} is not a map")
            out.append(RecordOp(action, ev.repo, collection, rkey, ev.rev, _cid_str(cid), record, ev.seq))
        return out
