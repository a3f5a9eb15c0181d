"""Verifying what the sync protocol hands over: a firehose `#commit` or `#sync`, a repo's commit.

One call per message, on the bytes received (specs/sync.md, "message validation"):

``verify_commit_message`` checks a `#commit`, in this order (the signature comes before the
inversion so that only a commit signed by the repo's key can fail the inversion, which costs
the receiver a resync):

1. ``rev`` is a TID no more than MAX_REV_DRIFT_S ahead of the clock ("a clock drift window of a
   few minutes").
2. The CAR slice parses; the commit block is there and hashes to the message's commit CID; the
   commit's ``did`` and ``rev`` equal the message's.
3. The commit signature verifies against the repo's signing key.
4. MST operation inversion, when the message carries ``prevData``: every op is undone on the
   partial tree in the slice, starting from the signed commit's ``data``; each create/update
   must be in that tree with its CID, each delete absent, and the root reached must be
   ``prevData``. Only the nodes the inversion touches are read, each hashed against its CID.
5. The record blocks of the wanted ops are hashed against their CIDs.

``verify_sync_message`` checks a `#sync` the same way (steps 1-3, the commit CID being the CAR's
first root); ``verify_repo_commit`` checks the root commit of a repo export (steps 2-3).

Signing keys come from a ``SigningKeyLookup`` (an IdentityResolver's ``signing_key`` is one): a
signature that fails is checked once more with a freshly fetched key, as the repo may have
rotated it. Without a lookup (``None``) neither the signature nor the inversion is checked: the
inversion proves the ops against the *signed* root, so without the signature it proves nothing.

Every failure is a ``VerificationError`` whose ``kind`` says which check failed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from protocol.car import Car, CarError, read_car
from protocol.cid import cid_to_str, verify_block
from protocol.commit import (
    Commit,
    CommitError,
    SigningKey,
    parse_commit,
    verify_commit_signature,
)
from protocol.errors import ProtocolError
from protocol.mst import MissingBlock, MstError, invert_ops
from protocol.syntax import is_valid, tid_from_micros, tid_to_micros

# "A clock drift window of a few minutes" (sync spec, message validation checklist).
MAX_REV_DRIFT_S = 300

ACTIONS = ("create", "update", "delete")

FailureKind = Literal["car", "commit", "signature", "identity", "future_rev", "inversion"]


class VerificationError(ProtocolError):
    """A commit that cannot be trusted. ``kind`` names the failed check:

    car (slice unreadable, block missing or not matching its CID), commit (malformed, or not
    the message's), signature, identity (no signing key to be had), future_rev, inversion.
    """

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


class SigningKeyLookup(Protocol):
    """The signing key of a DID; ``fresh`` skips any cache. Raises a ProtocolError when there is
    none to be had (e.g. an IdentityResolver's IdentityError)."""

    async def __call__(self, did: str, *, fresh: bool = False) -> SigningKey: ...


@dataclass(frozen=True, slots=True)
class CommitMessage:
    """The fields of a firehose `#commit` that verification reads."""

    repo: str
    rev: str
    commit: bytes | None  # binary CID of the commit block
    blocks: bytes  # the CAR slice, unread
    ops: Sequence[Any]  # every op of the message, as decoded: {action, path, cid, prev}
    prev_data: bytes | None = None  # MST root before this commit (sync 1.1)


@dataclass(frozen=True, slots=True)
class SyncMessage:
    """The fields of a firehose `#sync` that verification reads."""

    did: str
    rev: str | None
    blocks: bytes  # CAR slice whose first root is the signed commit


@dataclass(frozen=True, slots=True)
class VerifiedOp:
    """One verified op: for create/update, the record block hashed against ``cid``."""

    action: str
    collection: str
    rkey: str
    cid: bytes | None
    block: bytes | None


@dataclass(frozen=True, slots=True)
class VerifiedCommit:
    commit: Commit
    ops: list[VerifiedOp]


# ---------------------------------------------------------------- the calls


async def verify_commit_message(
    message: CommitMessage,
    keys: SigningKeyLookup | None,
    *,
    wanted: Sequence[Mapping[str, Any]] | None = None,
    now: float | None = None,
) -> VerifiedCommit:
    """Verify a `#commit` (see the module notes); return its commit and the ``wanted`` ops
    (default: all of ``message.ops``) with their record blocks. VerificationError otherwise."""
    check_rev(message.rev, now=now)
    car = _read_slice(message.blocks)
    commit = await _signed_commit(car, message.commit, message.repo, message.rev, keys)
    if message.prev_data is not None and keys is not None:
        check_inversion(commit.data, message.prev_data, message.ops, car.blocks)
    ops = message.ops if wanted is None else wanted
    return VerifiedCommit(commit, [_verified_op(op, car.blocks) for op in ops])


async def verify_sync_message(
    message: SyncMessage, keys: SigningKeyLookup | None, *, now: float | None = None
) -> Commit:
    """The verified commit of a `#sync`; VerificationError when anything is off."""
    check_rev(message.rev, now=now)
    assert message.rev is not None
    car = _read_slice(message.blocks)
    root = car.roots[0] if car.roots else None
    return await _signed_commit(car, root, message.did, message.rev, keys)


def verify_repo_commit(
    raw_block: bytes | None, commit_cid: bytes, did: str, key: SigningKey | None
) -> Commit:
    """The root commit of a repo export (getRepo), checked against its CID, its DID and, unless
    ``key`` is None, its signature. VerificationError otherwise."""
    commit = _commit_block(raw_block, commit_cid, did, None)
    assert raw_block is not None  # (_commit_block refuses a missing block)
    if key is not None and not verify_commit_signature(raw_block, key):
        raise VerificationError("signature", f"commit signature of {did} does not verify")
    return commit


# ---------------------------------------------------------------- the checks


def check_rev(rev: str | None, *, now: float | None = None) -> None:
    """VerificationError unless ``rev`` is a TID at most MAX_REV_DRIFT_S ahead of ``now`` (UNIX
    seconds, default: the wall clock)."""
    if not isinstance(rev, str) or not is_valid("tid", rev):
        raise VerificationError("commit", f"rev {rev!r:.40} is not a TID")
    # TIDs sort as strings in time order: one comparison with the latest acceptable TID (made
    # at most once a second) instead of decoding every rev; decode only to explain a refusal.
    now_s = time.time() if now is None else now
    if rev > _latest_acceptable_tid(int(now_s)):
        limit = int((now_s + MAX_REV_DRIFT_S) * 1_000_000)
        ahead = (tid_to_micros(rev) - limit) / 1_000_000 + MAX_REV_DRIFT_S
        raise VerificationError("future_rev", f"rev {rev} is {ahead:.0f} s ahead of our clock")


@functools.lru_cache(maxsize=4)
def _latest_acceptable_tid(now_s: int) -> str:
    # Now rounded down to the second: the window is MAX_REV_DRIFT_S minus less than a second.
    micros = (now_s + MAX_REV_DRIFT_S) * 1_000_000
    return tid_from_micros(min(micros, 2**53 - 1), clock_id=1023)


def check_inversion(
    data: bytes, prev_data: bytes, ops: Sequence[Any], blocks: Mapping[bytes, bytes]
) -> None:
    """Undo ``ops`` on the tree rooted at ``data`` (nodes from the CAR slice ``blocks``): the
    root reached must be ``prev_data``. VerificationError "inversion" when it is not or the ops
    do not fit the tree, "car" when an MST node does not match its CID."""
    inversion_ops = [_inversion_op(op) for op in ops]
    hashed: set[bytes] = set()

    def get_block(cid: bytes) -> bytes | None:
        raw = blocks.get(cid)
        if raw is not None and cid not in hashed:
            if not verify_block(cid, raw):
                raise VerificationError("car", f"MST node {cid_to_str(cid)} does not match its CID")
            hashed.add(cid)
        return raw

    try:
        root = invert_ops(data, get_block, inversion_ops)
    except MissingBlock as exc:
        raise VerificationError(
            "inversion",
            f"the CAR slice lacks MST node {cid_to_str(exc.cid)}, needed to invert the ops",
        ) from None
    except (MstError, ValueError, RecursionError) as exc:
        raise VerificationError("inversion", f"ops do not fit the commit's tree: {exc}") from None
    if root != prev_data:
        raise VerificationError(
            "inversion",
            f"ops undone on the commit's tree give root {cid_to_str(root)}, "
            f"prevData is {cid_to_str(prev_data)}",
        )


def _inversion_op(op: Any) -> tuple[str, str, bytes | None, bytes | None]:
    """(action, path, cid, prev) of one message op, type-checked."""
    if not isinstance(op, Mapping):
        raise VerificationError("commit", "commit op is not a map")
    action, path, cid, prev = op.get("action"), op.get("path"), op.get("cid"), op.get("prev")
    if (
        action not in ACTIONS
        or not isinstance(path, str)
        or not (cid is None or isinstance(cid, bytes))
        or not (prev is None or isinstance(prev, bytes))
    ):
        raise VerificationError("commit", f"malformed op {action!r:.20} {path!r:.80}")
    return action, path, cid, prev


def _read_slice(blocks: bytes) -> Car:
    try:
        # Framing only: each block used is hashed when it is used.
        return read_car(blocks, verify=False)
    except (CarError, ValueError) as exc:
        raise VerificationError("car", f"bad CAR slice: {exc}") from None


def _commit_block(raw: bytes | None, cid: bytes | None, did: str, rev: str | None) -> Commit:
    """The commit block ``raw`` hashed against ``cid``, parsed, and matched to ``did`` (and
    ``rev`` when given)."""
    if cid is None:
        raise VerificationError("commit", "no commit CID")
    if raw is None:
        raise VerificationError("car", "commit block missing")
    if not verify_block(cid, raw):
        raise VerificationError("car", "commit block does not match its CID")
    try:
        commit = parse_commit(raw)
    except CommitError as exc:
        raise VerificationError("commit", str(exc)) from None
    if commit.did != did:
        raise VerificationError("commit", f"commit is for {commit.did}, not {did}")
    if rev is not None and commit.rev != rev:
        raise VerificationError("commit", f"commit rev {commit.rev} != message rev {rev}")
    return commit


async def _signed_commit(
    car: Car, cid: bytes | None, did: str, rev: str, keys: SigningKeyLookup | None
) -> Commit:
    raw = car.blocks.get(cid) if cid is not None else None
    commit = _commit_block(raw, cid, did, rev)
    if keys is not None:
        assert raw is not None
        await _check_signature(raw, did, keys)
    return commit


async def _check_signature(raw: bytes, did: str, keys: SigningKeyLookup) -> None:
    try:
        key = await keys(did)
        if verify_commit_signature(raw, key):
            return
        # Maybe the key rotated and a cached document is old: one retry with a fresh one.
        fresh = await keys(did, fresh=True)
        if fresh != key and verify_commit_signature(raw, fresh):
            return
    except ProtocolError as exc:
        raise VerificationError("identity", f"cannot get the signing key of {did}: {exc}") from None
    raise VerificationError("signature", f"commit signature of {did} does not verify")


def _verified_op(op: Any, blocks: Mapping[bytes, bytes]) -> VerifiedOp:
    if not isinstance(op, Mapping):
        raise VerificationError("commit", "commit op is not a map")
    action, path = op.get("action"), op.get("path")
    if action not in ACTIONS or not isinstance(path, str) or path.count("/") != 1:
        raise VerificationError("commit", f"malformed op {action!r} {path!r}")
    collection, rkey = path.split("/")
    if action == "delete":
        return VerifiedOp(action, collection, rkey, None, None)
    cid = op.get("cid")
    if not isinstance(cid, bytes):
        raise VerificationError("commit", f"{action} of {path} without a record CID")
    block = blocks.get(cid)
    if block is None:
        raise VerificationError("car", f"record block of {path} missing from the CAR slice")
    if not verify_block(cid, block):
        raise VerificationError("car", f"record block of {path} does not match its CID")
    return VerifiedOp(action, collection, rkey, cid, block)
