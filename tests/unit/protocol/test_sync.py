"""protocol.sync: one call verifies a firehose #commit, a #sync, or a repo's root commit.

The indexer's adapter (tests/unit/indexer/test_verify_inversion.py) covers the tampering cases
through frames; these pin the protocol-level contract: the typed result, the key lookup and its
one fresh retry, and that nothing outside protocol/ is needed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from protocol.car import write_car
from protocol.crypto import PrivateKey, PublicKey
from protocol.identity import IdentityError
from protocol.sync import (
    CommitMessage,
    SyncMessage,
    VerificationError,
    verify_commit_message,
    verify_repo_commit,
    verify_sync_message,
)
from tests.support.frames import post_record, track_record
from tests.support.repo_builder import CommitResult, RepoBuilder

DID = "did:plc:alice234567abcdefghijklm"


class Keys:
    """A SigningKeyLookup over a dict; `rotated` answers fresh lookups only; calls recorded."""

    def __init__(self, key: PublicKey | None, rotated: PublicKey | None = None) -> None:
        self.key, self.rotated = key, rotated
        self.calls: list[bool] = []

    async def __call__(self, did: str, *, fresh: bool = False) -> PublicKey:
        self.calls.append(fresh)
        key = self.rotated if fresh and self.rotated is not None else self.key
        if key is None:
            raise IdentityError(f"{did}: not found", kind="not_found")
        return key


def message(result: CommitResult, **changes: Any) -> CommitMessage:
    body = result.firehose_body(seq=1)
    fields: dict[str, Any] = {
        "repo": body["repo"],
        "rev": body["rev"],
        "commit": result.commit_cid,
        "blocks": body["blocks"],
        "ops": body["ops"],
        "prev_data": result.prev_data,
    }
    fields.update(changes)
    return CommitMessage(**fields)


@pytest.fixture
def repo() -> RepoBuilder:
    r = RepoBuilder(DID, PrivateKey.generate("k256"))
    for i in range(50):
        r.put("app.bsky.feed.post", f"3kp{i:05d}", post_record(f"post {i}"))
    r.commit()
    return r


def test_a_commit_message_verifies_into_ops_with_their_record_blocks(repo: RepoBuilder) -> None:
    repo.put("fm.plyr.track", "3kt1", track_record("One"))
    repo.delete("app.bsky.feed.post", "3kp00001")
    result = repo.commit()
    keys = Keys(repo.key.public_key())
    verified = asyncio.run(verify_commit_message(message(result), keys))
    assert verified.commit.data == result.data and verified.commit.rev == result.rev
    by_path = {f"{op.collection}/{op.rkey}": op for op in verified.ops}
    track = by_path["fm.plyr.track/3kt1"]
    assert track.action == "create" and track.cid is not None and track.block is not None
    assert result.blocks[track.cid] == track.block
    deleted = by_path["app.bsky.feed.post/3kp00001"]
    assert deleted.action == "delete" and deleted.cid is None and deleted.block is None
    assert keys.calls == [False]

    # `wanted` picks the ops whose records come back; the inversion still covers all of them.
    wanted = [op for op in message(result).ops if op["path"].startswith("fm.plyr.")]
    only = asyncio.run(verify_commit_message(message(result), keys, wanted=wanted))
    assert [op.collection for op in only.ops] == ["fm.plyr.track"]
    with pytest.raises(VerificationError) as info:
        asyncio.run(verify_commit_message(message(result, ops=wanted), keys, wanted=wanted))
    assert info.value.kind == "inversion"


def test_the_key_is_fetched_fresh_once_when_the_signature_fails(repo: RepoBuilder) -> None:
    repo.put("fm.plyr.track", "3kt1", track_record())
    result = repo.commit()
    stale = PrivateKey.generate("p256").public_key()
    rotated = Keys(stale, rotated=repo.key.public_key())
    asyncio.run(verify_commit_message(message(result), rotated))
    assert rotated.calls == [False, True]

    wrong = Keys(stale)
    with pytest.raises(VerificationError) as info:
        asyncio.run(verify_commit_message(message(result), wrong))
    assert info.value.kind == "signature" and wrong.calls == [False, True]

    with pytest.raises(VerificationError) as info:
        asyncio.run(verify_commit_message(message(result), Keys(None)))
    assert info.value.kind == "identity"

    # Without a lookup neither the signature nor the inversion is checked.
    unsigned = asyncio.run(verify_commit_message(message(result, ops=[]), None))
    assert unsigned.ops == []


def test_sync_messages_and_repo_commits(repo: RepoBuilder) -> None:
    head = repo.head
    assert head is not None
    car = write_car([head.commit_cid], [(head.commit_cid, head.commit_block)])
    keys = Keys(repo.key.public_key())
    commit = asyncio.run(verify_sync_message(SyncMessage(DID, head.rev, car), keys))
    assert commit.data == head.data
    with pytest.raises(VerificationError) as info:
        asyncio.run(verify_sync_message(SyncMessage(DID, head.rev, b"\x01"), keys))
    assert info.value.kind == "car"

    key = repo.key.public_key()
    assert verify_repo_commit(head.commit_block, head.commit_cid, DID, key).rev == head.rev
    other = PrivateKey.generate("k256").public_key()
    for block, did, k, kind in [
        (head.commit_block, DID, other, "signature"),
        (head.commit_block, "did:plc:other234567abcdefghijklm", key, "commit"),
        (head.commit_block[:-1] + b"\x00", DID, key, "car"),
        (None, DID, key, "car"),
    ]:
        with pytest.raises(VerificationError) as info:
            verify_repo_commit(block, head.commit_cid, did, k)
        assert info.value.kind == kind
