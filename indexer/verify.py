"""The indexer's side of commit verification: firehose events in, RecordOps out.

The checks themselves are the protocol's (protocol/sync.py: rev window, CAR slice, commit,
signature, MST inversion against `prevData`, record blocks); this module feeds them the
decoded events, looks signing keys up in the IdentityResolver, and decodes the verified record
blocks into the JSON form the writer stores.

With `verify_signatures=False` (`--no-verify`) neither the signature nor the inversion is
checked; everything else still is. Failures raise VerifyError (protocol.sync's
VerificationError); its `kind` (car, commit, signature, identity, future_rev, inversion) is the
metric label and tells the consumer what to do (an `inversion` failure marks the repo for
resync).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import libipld
import orjson

from indexer.frames import CommitEvent, SyncEvent
from indexer.records import RecordOp
from protocol.cid import cid_to_str
from protocol.commit import Commit
from protocol.data_model import block_to_json
from protocol.sync import (
    MAX_REV_DRIFT_S,
    CommitMessage,
    SigningKeyLookup,
    SyncMessage,
    VerificationError,
    check_rev,
    verify_commit_message,
    verify_sync_message,
)

if TYPE_CHECKING:  # importing identity would pull in aiohttp
    from protocol.identity import IdentityResolving

VerifyError = VerificationError

__all__ = ["MAX_REV_DRIFT_S", "Verifier", "VerifyError", "check_rev", "record_json"]

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


class Verifier:
    def __init__(self, resolver: IdentityResolving | None, *, verify_signatures: bool = True) -> None:
        if verify_signatures and resolver is None:
            raise ValueError("signature checks need an identity resolver")
        self.resolver = resolver
        self.verify_signatures = verify_signatures

    @property
    def _keys(self) -> SigningKeyLookup | None:
        # The resolver's `signing_key(did, fresh=...)` is the lookup protocol.sync asks for.
        return self.resolver.signing_key if self.verify_signatures else None  # type: ignore[union-attr]

    def invalidate(self, did: str) -> None:
        """An `#identity` event: the next commit of `did` uses a freshly resolved key."""
        if self.resolver is not None:
            self.resolver.invalidate(did)

    async def sync_commit(self, ev: SyncEvent) -> Commit:
        """The verified commit of a `#sync` event; VerifyError when anything is off."""
        return await verify_sync_message(SyncMessage(ev.did, ev.rev, ev.blocks), self._keys)

    async def commit_ops(self, ev: CommitEvent) -> list[RecordOp]:
        """The verified record ops of a matched commit; VerifyError when anything is off."""
        message = CommitMessage(
            repo=ev.repo,
            rev=ev.rev,
            commit=ev.commit,
            blocks=ev.blocks,
            ops=ev.all_ops if ev.all_ops is not None else ev.ops,
            prev_data=ev.prev_data,
        )
        verified = await verify_commit_message(message, self._keys, wanted=ev.ops)
        out: list[RecordOp] = []
        for op in verified.ops:
            if op.block is None or op.cid is None:
                out.append(RecordOp(op.action, ev.repo, op.collection, op.rkey, ev.rev, None, None, ev.seq))
                continue
            path = f"{op.collection}/{op.rkey}"
            try:
                record = record_json(op.block)
            except ValueError as exc:
                raise VerifyError("car", f"record block of {path} is not valid DAG-CBOR: {exc}") from None
            if not isinstance(record, dict):
                raise VerifyError("car", f"record block of {path} is not a map")
            out.append(RecordOp(op.action, ev.repo, op.collection, op.rkey, ev.rev, _cid_str(op.cid), record, ev.seq))
        return out
