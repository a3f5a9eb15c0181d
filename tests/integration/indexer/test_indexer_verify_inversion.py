"""The consumer on a real Postgres with sync 1.1 commits (prevData, MST inversion), future revs
and `#sync` events: what fails is counted and written nowhere, inversion failures mark the repo
for resync, a `#sync` marks it only once its commit verifies, and the stream goes on.

Commits are real signed ones with the diff CARs a PDS sends (tests/support/repo_builder.py);
identities come from a local PLC stand-in over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from protocol.car import write_car
from protocol.crypto import PrivateKey
from protocol.data_model import Link, encode_dag_cbor_exact
from protocol.identity import IdentityResolver
from protocol.syntax import tid_from_micros
from tests.integration.indexer.test_indexer_consumer import replay
from tests.support.frames import post_record, track_record
from tests.support.identity import local_resolver
from tests.support.repo_builder import CommitResult, RepoBuilder
from tests.support.rkeys import tid_key
from tests.unit.protocol.fake_identity_server import FakeIdentityServer, did_doc

ALICE = "did:plc:alice234567abcdefghijklm"
BOB = "did:plc:bob234567abcdefghijklmno"
CAROL = "did:plc:carol234567abcdefghijklm"
TIME = "2026-01-01T00:00:00.000Z"


@pytest.fixture
async def identity() -> AsyncIterator[tuple[FakeIdentityServer, IdentityResolver]]:
    server = FakeIdentityServer()
    await server.start()
    resolver = local_resolver(server.url, handle_resolver_url=server.url, refresh_floor=0)
    yield server, resolver
    await resolver.close()
    await server.stop()


def repo(server: FakeIdentityServer, did: str) -> RepoBuilder:
    r = RepoBuilder(did, PrivateKey.generate("k256"))
    server.plc[did] = did_doc(did, r.key.public_key())
    return r


def commit_with(r: RepoBuilder, title: str, *, rev: str | None = None) -> CommitResult:
    """A commit adding a track and someone else's record (so the diff has foreign ops too)."""
    r.put("fm.plyr.track", tid_key(f"3kt{title.lower()}"), track_record(title))
    r.put("app.bsky.feed.post", f"3kp{title.lower()}", post_record(title))
    return r.commit(rev=rev)


def frame_of(body: dict[str, Any], t: str = "#commit") -> bytes:
    return encode_dag_cbor_exact({"op": 1, "t": t}) + encode_dag_cbor_exact(body)


def sync_frame(seq: int, result: CommitResult) -> bytes:
    car = write_car([result.commit_cid], [(result.commit_cid, result.commit_block)])
    return frame_of(
        {"seq": seq, "did": result.did, "rev": result.rev, "blocks": car, "time": TIME}, "#sync"
    )


def failures(kind: str) -> float:
    return REGISTRY.get_sample_value("plyr_indexer_verify_failures_total", {"kind": kind}) or 0.0


async def test_tampered_commits_and_syncs_are_rejected_and_the_stream_goes_on(
    pool, database_url, tmp_path, identity
) -> None:
    server, resolver = identity
    alice, bob, carol = repo(server, ALICE), repo(server, BOB), repo(server, CAROL)
    for r in (alice, bob, carol):  # some history, so trees have a few levels
        for i in range(60):
            r.put("app.bsky.feed.post", f"3kh{i:04d}", post_record(f"old {i}"))
        r.commit()

    a1 = commit_with(alice, "A1")
    a2 = commit_with(alice, "A2")
    wrong_prev = commit_with(alice, "WrongPrev").firehose_body(3, TIME)
    wrong_prev["prevData"] = Link(a1.data)
    missing_op = commit_with(alice, "MissingOp").firehose_body(4, TIME)
    missing_op["ops"] = [op for op in missing_op["ops"] if op["path"].startswith("fm.plyr.")]
    a5 = commit_with(alice, "A5")
    b1 = commit_with(bob, "B1")
    b_future = commit_with(bob, "BFuture", rev=tid_from_micros(int((time.time() + 3600) * 1e6)))
    c1 = commit_with(carol, "C1")
    forger = RepoBuilder(CAROL, PrivateKey.generate("k256"))
    forger.put("fm.plyr.track", "3ktforgedx222", track_record("Forged"))
    forged = forger.commit()
    assert forged.rev > c1.rev  # newer: only the signature tells it apart
    frames = [
        a1.firehose_frame(1, TIME),
        a2.firehose_frame(2, TIME),
        frame_of(wrong_prev),
        frame_of(missing_op),
        a5.firehose_frame(5, TIME),
        b1.firehose_frame(6, TIME),
        b_future.firehose_frame(7, TIME),
        c1.firehose_frame(8, TIME),
        sync_frame(9, forged),  # signed with a key that is not Carol's
        sync_frame(10, c1),  # stale: the rev we already hold
    ]
    before = {k: failures(k) for k in ("inversion", "future_rev", "sync_signature")}
    c = await replay(pool, database_url, tmp_path, frames, resolver, name="s.bin")

    titles = sorted(r["title"] for r in await pool.fetch("SELECT title FROM tracks"))
    assert titles == ["A1", "A2", "A5", "B1", "C1"]
    letters = await pool.fetch("SELECT seq, did, reason, raw FROM dead_letters ORDER BY seq")
    assert [(r["seq"], r["reason"].split(":")[0]) for r in letters] == [
        (3, "inversion"),
        (4, "inversion"),
        (7, "future_rev"),
    ]
    assert all(r["raw"] for r in letters)
    assert c.stats.verify_failures == 4  # the three commits and the forged #sync
    assert await pool.fetchval("SELECT seq FROM cursors WHERE source = 'capture:s.bin'") == 10
    assert failures("inversion") - before["inversion"] == 2
    assert failures("future_rev") - before["future_rev"] == 1
    assert failures("sync_signature") - before["sync_signature"] == 1

    actors = {
        r["did"]: r
        for r in await pool.fetch("SELECT did, repo_rev, needs_resync, resync_reason FROM actors")
    }
    # Inversion failures: the whole repo is fetched again (the last reason recorded may be the
    # gap the refused commits left: the next commit's `since` is a rev we never took).
    assert actors[ALICE]["needs_resync"]
    reason = actors[ALICE]["resync_reason"]
    assert "(inversion)" in reason or f"since={missing_op['rev']}" in reason
    # A future rev is refused before it is tracked: Bob's rev stays where it was, no resync.
    assert actors[BOB]["repo_rev"] == b1.rev and not actors[BOB]["needs_resync"]
    # The forged and the stale #sync caused nothing.
    assert not actors[CAROL]["needs_resync"]

    # A genuine #sync with a newer rev marks the repo (next events of the same capture).
    c2 = commit_with(carol, "C2")
    more = [sync_frame(11, c2), b1.firehose_frame(12, TIME)]
    c = await replay(pool, database_url, tmp_path, more, resolver, name="s.bin")
    row = await pool.fetchrow(
        "SELECT needs_resync, resync_reason FROM actors WHERE did = $1", CAROL
    )
    assert row["needs_resync"] and "#sync event at seq 11" in row["resync_reason"]
    assert c.stats.verify_failures == 0
    assert await pool.fetchval("SELECT seq FROM cursors WHERE source = 'capture:s.bin'") == 12


async def test_a_commit_that_fails_verification_does_not_move_the_repo_rev(
    pool, database_url, tmp_path, identity
) -> None:
    server, resolver = identity
    carol = repo(server, CAROL)
    c1 = commit_with(carol, "C1")
    forger = RepoBuilder(CAROL, PrivateKey.generate("k256"))
    forger.put("fm.plyr.track", "3ktforgedx222", track_record("Forged"))
    forged = forger.commit()
    assert forged.rev > c1.rev
    c2 = commit_with(carol, "C2")
    assert c2.rev > forged.rev
    before = failures("signature")
    frames = [c1.firehose_frame(1, TIME), forged.firehose_frame(2, TIME)]
    c = await replay(pool, database_url, tmp_path, frames, resolver, name="f.bin")
    assert c.stats.verify_failures == 1 and failures("signature") - before == 1
    # The forged commit's newer rev is not Carol's rev: it was never verified.
    row = await pool.fetchrow("SELECT repo_rev, needs_resync FROM actors WHERE did = $1", CAROL)
    assert row["repo_rev"] == c1.rev and not row["needs_resync"]
    # Carol's next real commit follows the rev we hold: no gap, no resync.
    c = await replay(pool, database_url, tmp_path, [c2.firehose_frame(3, TIME)], resolver, name="f.bin")
    row = await pool.fetchrow("SELECT repo_rev, needs_resync FROM actors WHERE did = $1", CAROL)
    assert row["repo_rev"] == c2.rev and not row["needs_resync"]
    assert sorted(r["title"] for r in await pool.fetch("SELECT title FROM tracks")) == ["C1", "C2"]


async def test_a_corrupt_record_block_marks_the_repo_for_resync(
    pool, database_url, tmp_path, identity
) -> None:
    """Replaying the same bytes cannot bring the record back: the repo is fetched whole."""
    from protocol.car import read_car

    server, resolver = identity
    dave = repo(server, "did:plc:dave234567abcdefghijklmn")
    d1 = commit_with(dave, "D1")
    body = d1.firehose_body(1, TIME)
    car = read_car(d1.car_bytes, verify=False)
    track_cid = next(op.cid for op in d1.ops if op.path.startswith("fm.plyr.track/"))
    blocks = dict(car.blocks)
    blocks[track_cid] = blocks[track_cid].replace(b"D1", b"XX")  # same CID, other bytes
    body["blocks"] = write_car(car.roots, list(blocks.items()))
    c = await replay(pool, database_url, tmp_path, [frame_of(body)], resolver, name="d.bin")
    assert c.stats.verify_failures == 1
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 0
    row = await pool.fetchrow(
        "SELECT needs_resync, resync_reason FROM actors WHERE did = $1", dave.did
    )
    assert row is not None and row["needs_resync"] and "(car)" in row["resync_reason"]
