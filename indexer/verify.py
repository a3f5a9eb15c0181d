"""Verification of matched commits and of `#sync` events, on the bytes received.

What a matched `#commit` (one that carries `fm.plyr.*` ops, about 0.1% of the network) must
pass before its ops are used, in this order (the signature comes before the inversion so that
only a commit signed by the repo's key can get the repo marked for resync):

1. `rev` is a TID no more than MAX_REV_DRIFT_S ahead of our clock (sync spec: reject future
   revs beyond "a clock drift window of a few minutes"). The consumer runs this check on every
   commit event it sees, before it tracks the repo's rev, so a far-future rev cannot poison it.
2. The CAR slice parses; the commit block is there and matches the message's commit CID; the
   commit's `did` and `rev` equal the message's.
3. The commit signature verifies against the repo's signing key.
4. MST operation inversion (sync spec, "inductive firehose"), when the message carries
   `prevData`: all of the message's ops (not only ours) are undone on the partial tree in the
   CAR, starting from the signed commit's `data`; every create/update must be in that tree with
   its CID, every delete absent, and the tree that results must have `prevData` as its root.
   Only the MST nodes the inversion touches are read, each hashed against its CID. Messages
   without `prevData` (older relays and PDSes) skip this step.
5. Each fm.plyr record block used is hashed against its CID and decoded.

A `#sync` event of a repo we index is checked the same way (steps 1-3, with the commit CID
taken from the CAR's first root) before it may mark the repo for resync (`sync_commit`).

Signing keys come from the IdentityResolver (did:plc and did:web, cached). A failed check is
retried once with a freshly resolved key (the repo may have rotated it); `#identity` events
invalidate the cached document. With `verify_signatures=False` (`--no-verify`) neither the
signature nor the inversion (which proves the ops against the signed root, so means nothing
without it) is checked; everything else still is.

Failures raise VerifyError; its `kind` (car, commit, signature, identity, future_rev,
inversion) is the metric label and tells the consumer what to do (an `inversion` failure marks
the repo for resync).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import libipld
import orjson

from indexer.frames import CommitEvent, SyncEvent
from indexer.records import ACTIONS, RecordOp
from protocol.car import Car, CarError, read_car
from protocol.cid import cid_to_str, verify_block
from protocol.commit import Commit, CommitError, parse_commit, verify_commit_signature
from protocol.data_model import block_to_json
from protocol.mst import MissingBlock, MstError, invert_ops
from protocol.syntax import is_valid, tid_from_micros, tid_to_micros

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
    """The commit cannot be trusted; `kind` is the metric label (see the module docstring)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# "A clock drift window of a few minutes" (sync spec, message validation checklist).
MAX_REV_DRIFT_S = 300


def check_rev(rev: str | None, *, now: float | None = None) -> None:
    """VerifyError unless `rev` is a TID at most MAX_REV_DRIFT_S ahead of `now` (UNIX seconds,
    default: the wall clock)."""
    if not isinstance(rev, str) or not is_valid("tid", rev):
        raise VerifyError("commit", f"rev {rev!r:.40} is not a TID")
    # TIDs sort as strings in time order: one comparison with the latest acceptable TID (made
    # at most once a second) instead of decoding every rev; decode only to explain a refusal.
    now_s = time.time() if now is None else now
    if rev > _latest_acceptable_tid(int(now_s)):
        limit = int((now_s + MAX_REV_DRIFT_S) * 1_000_000)
        ahead = (tid_to_micros(rev) - limit) / 1_000_000 + MAX_REV_DRIFT_S
        raise VerifyError("future_rev", f"rev {rev} is {ahead:.0f} s ahead of our clock")


@functools.lru_cache(maxsize=4)
def _latest_acceptable_tid(now_s: int) -> str:
    # Now rounded down to the second: the window is MAX_REV_DRIFT_S minus less than a second.
    micros = (now_s + MAX_REV_DRIFT_S) * 1_000_000
    return tid_from_micros(min(micros, 2**53 - 1), clock_id=1023)


class _BlockMismatch(Exception):
    def __init__(self, cid: bytes) -> None:
        super().__init__(cid)
        self.cid = cid


def _inversion_op(op: Any) -> tuple[str, str, bytes | None, bytes | None]:
    """(action, path, cid, prev) of one message op, type-checked (only ours were, by frames)."""
    if not isinstance(op, dict):
        raise VerifyError("commit", "commit op is not a map")
    action, path, cid, prev = op.get("action"), op.get("path"), op.get("cid"), op.get("prev")
    if (
        action not in ACTIONS
        or not isinstance(path, str)
        or not (cid is None or isinstance(cid, bytes))
        or not (prev is None or isinstance(prev, bytes))
    ):
        raise VerifyError("commit", f"malformed op {action!r:.20} {path!r:.80}")
    return action, path, cid, prev


def check_inversion(
    data: bytes, prev_data: bytes, ops: list[Any], blocks: dict[bytes, bytes]
) -> None:
    """Undo `ops` on the tree rooted at `data` (nodes from the CAR slice `blocks`): the root
    reached must be `prev_data`. VerifyError("inversion") when it is not or when the ops do not
    fit the tree, VerifyError("car") when an MST node does not match its CID."""
    inversion_ops = [_inversion_op(op) for op in ops]
    hashed: set[bytes] = set()

    def get_block(cid: bytes) -> bytes | None:
        raw = blocks.get(cid)
        if raw is not None and cid not in hashed:
            if not verify_block(cid, raw):
                raise _BlockMismatch(cid)
            hashed.add(cid)
        return raw

    try:
        root = invert_ops(data, get_block, inversion_ops)
    except _BlockMismatch as exc:
        raise VerifyError("car", f"MST node {_cid_str(exc.cid)} does not match its CID") from None
    except MissingBlock as exc:
        raise VerifyError(
            "inversion",
            f"the CAR slice lacks MST node {_cid_str(exc.cid)}, needed to invert the ops",
        ) from None
    except (MstError, ValueError, RecursionError) as exc:
        raise VerifyError("inversion", f"ops do not fit the commit's tree: {exc}") from None
    if root != prev_data:
        raise VerifyError(
            "inversion",
            f"ops undone on the commit's tree give root {_cid_str(root)}, "
            f"prevData is {_cid_str(prev_data)}",
        )


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

        resolver = self.resolver
        assert resolver is not None  # __init__ requires one when signatures are checked
        try:
            key = await resolver.signing_key(did)
            if verify_commit_signature(raw_commit, key):
                return True
            # Maybe the key rotated and our cached document is old: one retry with a fresh one.
            fresh = await resolver.signing_key(did, fresh=True)
            if fresh == key:
                return False
            return verify_commit_signature(raw_commit, fresh)
        except IdentityError as exc:
            raise VerifyError("identity", f"cannot get the signing key of {did}: {exc}") from None

    async def _signed_commit(
        self, car: Car, commit_cid: bytes | None, did: str, rev: str
    ) -> Commit:
        """The commit block `commit_cid` of `car`, hashed, parsed, matched against the message's
        did and rev, and its signature checked."""
        if commit_cid is None:
            raise VerifyError("commit", "message has no commit CID")
        raw_commit = car.blocks.get(commit_cid)
        if raw_commit is None:
            raise VerifyError("car", "commit block missing from the CAR slice")
        if not verify_block(commit_cid, raw_commit):
            raise VerifyError("car", "commit block does not match its CID")
        try:
            commit = parse_commit(raw_commit)
        except CommitError as exc:
            raise VerifyError("commit", str(exc)) from None
        if commit.did != did:
            raise VerifyError("commit", f"commit is for {commit.did}, message says {did}")
        if commit.rev != rev:
            raise VerifyError("commit", f"commit rev {commit.rev} != message rev {rev}")
        if self.verify_signatures and not await self._signature_ok(did, raw_commit):
            raise VerifyError("signature", f"commit signature of {did} does not verify")
        return commit

    async def sync_commit(self, ev: SyncEvent) -> Commit:
        """The verified commit of a `#sync` event; VerifyError when anything is off."""
        check_rev(ev.rev)
        assert ev.rev is not None
        try:
            car = read_car(ev.blocks, verify=False)  # framing only: the commit block is hashed
        except (CarError, ValueError) as exc:
            raise VerifyError("car", f"bad CAR slice: {exc}") from None
        return await self._signed_commit(car, car.roots[0] if car.roots else None, ev.did, ev.rev)

    async def commit_ops(self, ev: CommitEvent) -> list[RecordOp]:
        """The verified record ops of a matched commit; VerifyError when anything is off."""
        check_rev(ev.rev)
        try:
            # Framing only: the blocks we use are hashed when used.
            car = read_car(ev.blocks, verify=False)
        except (CarError, ValueError) as exc:
            raise VerifyError("car", f"bad CAR slice: {exc}") from None
        commit = await self._signed_commit(car, ev.commit, ev.repo, ev.rev)
        # The inversion proves the ops against the *signed* tree root: with signatures off
        # (--no-verify) nothing anchors that root, so the check would prove nothing and it is
        # skipped too (it costs about as much as the signature check, in Python).
        if ev.prev_data is not None and self.verify_signatures:
            all_ops = ev.all_ops if ev.all_ops is not None else ev.ops
            check_inversion(commit.data, ev.prev_data, all_ops, car.blocks)

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
