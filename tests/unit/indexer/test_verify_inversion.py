"""Verifier: MST operation inversion against `prevData`, future revs, and `#sync` commits.

Commits are real: signed, with the diff CARs and `prevData` a PDS sends
(tests/support/repo_builder.py); the tampered ones are built from them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from indexer.frames import CommitEvent, FrameDecoder, SyncEvent
from indexer.verify import MAX_REV_DRIFT_S, Verifier, VerifyError, check_rev
from protocol.car import write_car
from protocol.cid import cid_for_cbor
from protocol.crypto import PrivateKey
from protocol.data_model import Link, encode_dag_cbor_exact
from protocol.syntax import tid_from_micros
from tests.support.frames import post_record, track_record
from tests.support.identity import FakeResolver
from tests.support.repo_builder import CommitResult, RepoBuilder

DID = "did:plc:alice234567abcdefghijklm"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def now_rev(offset_s: float = 0.0) -> str:
    return tid_from_micros(int((time.time() + offset_s) * 1_000_000))


@pytest.fixture
def repo() -> RepoBuilder:
    """A repo with enough records for a tree of several levels, already committed once."""
    r = RepoBuilder(DID, PrivateKey.generate("k256"))
    for i in range(300):
        r.put("app.bsky.feed.post", f"3kp{i:05d}", post_record(f"post {i}"))
    for i in range(20):
        r.put("fm.plyr.track", f"3kt{i:05d}", track_record(f"Track {i}"))
    r.commit()
    return r


@pytest.fixture
def verifier(repo: RepoBuilder) -> Verifier:
    return Verifier(FakeResolver({DID: repo.key.public_key()}))


def frame_of(body: dict[str, Any], t: str = "#commit") -> bytes:
    return encode_dag_cbor_exact({"op": 1, "t": t}) + encode_dag_cbor_exact(body)


def event(body: dict[str, Any]) -> CommitEvent:
    ev = FrameDecoder().decode(frame_of(body))
    assert isinstance(ev, CommitEvent), ev
    return ev


def rejected(verifier: Verifier, body: dict[str, Any]) -> VerifyError:
    with pytest.raises(VerifyError) as info:
        run(verifier.commit_ops(event(body)))
    return info.value


def mixed_commit(repo: RepoBuilder, n: int = 0) -> CommitResult:
    """Create, update and delete, ours and others' records, in one commit."""
    repo.put("fm.plyr.track", f"3kn{n:05d}", track_record(f"New {n}"))
    repo.put("fm.plyr.track", "3kt00003", track_record(f"Retitled {n}"))
    repo.delete("fm.plyr.track", f"3kt{10 + n:05d}")
    repo.put("app.bsky.feed.post", f"3kq{n:05d}", post_record("another"))
    repo.delete("app.bsky.feed.post", f"3kp{n:05d}")
    return repo.commit()


# ---- valid commits ----------------------------------------------------------------------


def test_real_commits_with_prev_data_pass(repo: RepoBuilder, verifier: Verifier) -> None:
    for n in range(5):
        result = mixed_commit(repo, n)
        assert result.prev_data is not None
        body = result.firehose_body(seq=n + 1)
        ev = event(body)
        assert ev.prev_data == result.prev_data and len(ev.all_ops or []) == 5 and len(ev.ops) == 3
        ops = run(verifier.commit_ops(ev))
        assert sorted((o.action, o.rkey) for o in ops) == sorted(
            [("create", f"3kn{n:05d}"), ("update", "3kt00003"), ("delete", f"3kt{10 + n:05d}")]
        )


def test_single_op_commits_pass(repo: RepoBuilder, verifier: Verifier) -> None:
    repo.put("fm.plyr.track", "3kz00001", track_record("Solo"))
    run(verifier.commit_ops(event(repo.commit().firehose_body(seq=1))))
    repo.delete("fm.plyr.track", "3kz00001")
    assert [
        o.action for o in run(verifier.commit_ops(event(repo.commit().firehose_body(seq=2))))
    ] == ["delete"]


def test_first_commit_of_a_repo_from_an_empty_tree() -> None:
    """The first commit has no prevData; the second inverts back to a one-record tree."""
    r = RepoBuilder(DID, PrivateKey.generate("p256"))
    v = Verifier(FakeResolver({DID: r.key.public_key()}))
    r.put("fm.plyr.track", "3kt1", track_record("First"))
    first = r.commit()
    assert first.prev_data is None
    assert len(run(v.commit_ops(event(first.firehose_body(seq=1))))) == 1
    r.delete("fm.plyr.track", "3kt1")
    second = r.commit()
    assert second.prev_data == first.data
    assert len(run(v.commit_ops(event(second.firehose_body(seq=2))))) == 1


# ---- tampered commits -------------------------------------------------------------------


def test_wrong_prev_data_is_rejected(repo: RepoBuilder, verifier: Verifier) -> None:
    older = repo.head
    assert older is not None
    mixed_commit(repo, 0)
    result = mixed_commit(repo, 1)
    body = result.firehose_body(seq=1)
    body["prevData"] = Link(older.data)  # two commits back: real root, wrong one
    err = rejected(verifier, body)
    assert err.kind == "inversion" and "prevData" in str(err)


def test_an_op_that_does_not_match_the_tree_is_rejected(
    repo: RepoBuilder, verifier: Verifier
) -> None:
    result = mixed_commit(repo)
    other_cid = cid_for_cbor(encode_dag_cbor_exact({"not": "this record"}))

    # The CID of someone else's record changed: the tree holds another one.
    body = result.firehose_body(seq=1)
    post_op = next(
        op for op in body["ops"] if op["path"].startswith("app.bsky") and op["action"] == "create"
    )
    post_op["cid"] = Link(other_cid)
    assert rejected(verifier, body).kind == "inversion"

    # An op left out: undoing the others does not lead back to prevData.
    body = result.firehose_body(seq=1)
    body["ops"] = [op for op in body["ops"] if not op["path"].startswith("app.bsky")]
    assert rejected(verifier, body).kind == "inversion"

    # An extra create of a path the new tree does not hold.
    body = result.firehose_body(seq=1)
    body["ops"].append(
        {"action": "create", "path": "app.bsky.feed.post/3kx", "cid": Link(other_cid)}
    )
    assert rejected(verifier, body).kind == "inversion"

    # A delete whose prev is not what the old tree held.
    body = result.firehose_body(seq=1)
    delete_op = next(op for op in body["ops"] if op["action"] == "delete")
    delete_op["prev"] = Link(other_cid)
    assert rejected(verifier, body).kind == "inversion"

    # An update presented as a create.
    body = result.firehose_body(seq=1)
    update_op = next(op for op in body["ops"] if op["action"] == "update")
    update_op["action"] = "create"
    del update_op["prev"]
    assert rejected(verifier, body).kind == "inversion"


def test_diff_without_the_nodes_inversion_needs_is_rejected(
    repo: RepoBuilder, verifier: Verifier
) -> None:
    result = mixed_commit(repo)
    # Only the commit, the new root and the records: no other MST node.
    wanted = {result.commit_cid, result.data} | {op.cid for op in result.ops if op.cid is not None}
    kept = [(cid, block) for cid, block in result.blocks.items() if cid in wanted]
    assert len(kept) < len(result.blocks)
    body = result.firehose_body(seq=1)
    body["blocks"] = write_car([result.commit_cid], kept)
    err = rejected(verifier, body)
    assert err.kind == "inversion" and "lacks MST node" in str(err)


def test_mst_node_that_does_not_match_its_cid_is_rejected(
    repo: RepoBuilder, verifier: Verifier
) -> None:
    result = mixed_commit(repo)
    root_block = result.blocks[result.data]
    # Same length, different bytes: flip one byte of the last link's digest.
    forged = root_block[:-1] + bytes([root_block[-1] ^ 1])
    blocks = [(c, forged if c == result.data else b) for c, b in result.blocks.items()]
    body = result.firehose_body(seq=1)
    body["blocks"] = write_car([result.commit_cid], blocks)
    err = rejected(verifier, body)
    assert err.kind == "car" and "MST node" in str(err)


def test_malformed_foreign_op_is_rejected(repo: RepoBuilder, verifier: Verifier) -> None:
    body = mixed_commit(repo).firehose_body(seq=1)
    next(op for op in body["ops"] if op["path"].startswith("app.bsky"))["cid"] = "bafy-not-a-link"
    assert rejected(verifier, body).kind == "commit"


def test_without_prev_data_inversion_is_skipped(repo: RepoBuilder, verifier: Verifier) -> None:
    """Older relays send no prevData: today's checks only (an omitted foreign op goes unseen)."""
    body = mixed_commit(repo).firehose_body(seq=1)
    del body["prevData"]
    body["ops"] = [op for op in body["ops"] if op["path"].startswith("fm.plyr.")]
    assert len(run(verifier.commit_ops(event(body)))) == 3


def test_inversion_goes_with_signature_checks(repo: RepoBuilder, verifier: Verifier) -> None:
    """The inversion proves ops against the signed root: with signatures off it is off too."""
    body = mixed_commit(repo).firehose_body(seq=1)
    body["ops"] = body["ops"][1:]
    assert rejected(verifier, body).kind == "inversion"
    unverified = run(Verifier(None, verify_signatures=False).commit_ops(event(body)))
    assert unverified  # the record ops are still read, their blocks still hashed


def test_bad_signature_is_reported_before_the_inversion(repo: RepoBuilder) -> None:
    """A forged commit must not get as far as the inversion (whose failure costs a resync)."""
    body = mixed_commit(repo).firehose_body(seq=1)
    body["ops"] = body["ops"][1:]
    wrong = Verifier(FakeResolver({DID: PrivateKey.generate("k256").public_key()}))
    assert rejected(wrong, body).kind == "signature"


# ---- future revs ------------------------------------------------------------------------


def test_check_rev_allows_the_drift_window_only() -> None:
    now = 1_800_000_000.0
    check_rev(tid_from_micros(int(now * 1e6)), now=now)
    check_rev(tid_from_micros(int((now + MAX_REV_DRIFT_S) * 1e6)), now=now)
    check_rev(tid_from_micros(int((now - 10 * 365 * 86400) * 1e6)), now=now)
    with pytest.raises(VerifyError) as info:
        check_rev(tid_from_micros(int((now + MAX_REV_DRIFT_S + 1) * 1e6)), now=now)
    assert info.value.kind == "future_rev"
    for bad in ("3kabc", "zzzzzzzzzzzzz", "", None):
        with pytest.raises(VerifyError) as info:
            check_rev(bad, now=now)
        assert info.value.kind == "commit"


def test_future_rev_commit_is_rejected_and_near_future_passes(
    repo: RepoBuilder, verifier: Verifier
) -> None:
    repo.put("fm.plyr.track", "3kf1", track_record("Soon"))
    soon = repo.commit(rev=now_rev(60))  # within the window: clocks drift
    assert len(run(verifier.commit_ops(event(soon.firehose_body(seq=1))))) == 1
    repo.put("fm.plyr.track", "3kf2", track_record("Later"))
    later = repo.commit(rev=now_rev(3600))  # properly signed, but an hour ahead
    err = rejected(verifier, later.firehose_body(seq=2))
    assert err.kind == "future_rev"


# ---- #sync ------------------------------------------------------------------------------


def sync_event(
    result: CommitResult,
    *,
    did: str | None = None,
    rev: str | None = None,
    car: bytes | None = None,
) -> SyncEvent:
    body = {
        "seq": 1,
        "did": did or result.did,
        "rev": rev or result.rev,
        "time": "2026-01-01T00:00:00.000Z",
        "blocks": car
        if car is not None
        else write_car([result.commit_cid], [(result.commit_cid, result.commit_block)]),
    }
    ev = FrameDecoder().decode(frame_of(body, "#sync"))
    assert isinstance(ev, SyncEvent), ev
    return ev


def test_sync_commit_verifies(repo: RepoBuilder, verifier: Verifier) -> None:
    head = repo.head
    assert head is not None
    commit = run(verifier.sync_commit(sync_event(head)))
    assert commit.rev == head.rev and commit.data == head.data


def test_bad_sync_events_are_rejected(repo: RepoBuilder, verifier: Verifier) -> None:
    head = repo.head
    assert head is not None

    def kind(ev: SyncEvent, v: Verifier = verifier) -> str:
        with pytest.raises(VerifyError) as info:
            run(v.sync_commit(ev))
        return info.value.kind

    forger = RepoBuilder(DID, PrivateKey.generate("k256"))
    forger.put("fm.plyr.track", "3kt1", track_record())
    assert kind(sync_event(forger.commit())) == "signature"
    assert kind(sync_event(head, did="did:plc:other234567abcdefghijklm")) == "commit"
    assert kind(sync_event(head, rev=now_rev(-60))) == "commit"  # not the commit's rev
    tampered = head.commit_block.replace(head.rev.encode(), now_rev(-60).encode())
    assert (
        kind(sync_event(head, car=write_car([head.commit_cid], [(head.commit_cid, tampered)])))
        == "car"
    )
    assert kind(sync_event(head, car=write_car([head.commit_cid], []))) == "car"  # block missing
    assert kind(sync_event(head, car=b"\x01\x02")) == "car"
    no_blocks = FrameDecoder().decode(
        frame_of({"seq": 1, "did": DID, "rev": head.rev, "time": "t"}, "#sync")
    )
    assert isinstance(no_blocks, SyncEvent) and kind(no_blocks) == "car"
    repo.put("fm.plyr.track", "3kf1", track_record())
    future = repo.commit(rev=now_rev(3600))
    assert kind(sync_event(future)) == "future_rev"
    # Unsigned checks still apply without signature verification.
    assert (
        kind(
            sync_event(head, did="did:plc:other234567abcdefghijklm"),
            Verifier(None, verify_signatures=False),
        )
        == "commit"
    )
