"""Handle checks (indexer/handles.py) on a real Postgres: requested in the write transaction,
looked up in the background, never lost to a crash or to a request made during a lookup."""

from __future__ import annotations

import asyncio
from typing import Any

from indexer.handles import MAX_FAILURES, HandleChecker, request_checks
from indexer.records import RecordOp
from indexer.writer import AccountChange, apply_account
from tests.integration.indexer.test_indexer_consumer import replay
from tests.support.frames import identity_frame, track_record
from tests.support.identity import FakeResolver
from tests.support.indexing import index_records

ALICE = "did:plc:alice234567abcdefghijklm"
BOB = "did:plc:bob234567abcdefghijklmno"
CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"


async def _track(pool, did: str, rkey: str = "3ktcx22222222") -> None:
    op = RecordOp("create", did, "fm.plyr.track", rkey, "3kaaaaaaaaaa2", CID, track_record("T"), None)
    await index_records(pool, [op])


async def _state(pool, did: str) -> Any:
    return await pool.fetchrow(
        "SELECT handle, handle_check_wanted > handle_check_done AS pending, handle_check_failures,"
        " handle_check_after > now() AS waiting FROM actors WHERE did = $1",
        did,
    )


async def test_actors_written_outside_the_live_stream_get_their_handle(pool) -> None:
    # e.g. a backfill: the row is created by the writer, nobody spawned a lookup for it
    await _track(pool, ALICE)
    assert (await _state(pool, ALICE))["pending"]
    resolver = FakeResolver(handles={ALICE: "alice.test"})
    assert await HandleChecker(pool, resolver).run_once() == 1
    row = await _state(pool, ALICE)
    assert row["handle"] == "alice.test" and not row["pending"]
    assert await HandleChecker(pool, resolver).run_once() == 0  # nothing due any more


async def test_a_request_made_during_the_lookup_keeps_the_check_pending(pool) -> None:
    await _track(pool, ALICE)
    resolver = FakeResolver(handles={ALICE: "old.test"})

    async def identity_event_meanwhile(did: str) -> None:
        async with pool.acquire() as conn:
            await request_checks(conn, [did])

    resolver.during = identity_event_meanwhile
    checker = HandleChecker(pool, resolver)
    await checker.run_once()
    row = await _state(pool, ALICE)
    assert row["handle"] == "old.test" and row["pending"]  # the new request survived
    resolver.during = None
    resolver.handles[ALICE] = "new.test"
    await checker.run_once()
    row = await _state(pool, ALICE)
    assert row["handle"] == "new.test" and not row["pending"]


async def test_failures_back_off_then_give_up_until_the_next_request(pool) -> None:
    await _track(pool, ALICE)
    resolver = FakeResolver(handles={})
    resolver.failing.add(ALICE)
    checker = HandleChecker(pool, resolver)
    await checker.run_once()
    row = await _state(pool, ALICE)
    assert row["pending"] and row["waiting"] and row["handle_check_failures"] == 1
    assert await checker.run_once() == 0  # not due before its backoff
    for _ in range(MAX_FAILURES - 1):
        await pool.execute("UPDATE actors SET handle_check_after = now() WHERE did = $1", ALICE)
        await checker.run_once()
    assert not (await _state(pool, ALICE))["pending"]  # given up
    async with pool.acquire() as conn:
        await request_checks(conn, [ALICE])  # an #identity event: try again at once
    resolver.failing.clear()
    resolver.handles[ALICE] = "alice.test"
    assert await checker.run_once() == 1
    assert (await _state(pool, ALICE))["handle"] == "alice.test"


async def test_hidden_actors_wait_until_they_are_visible(pool) -> None:
    await _track(pool, ALICE)
    async with pool.acquire() as conn:
        await apply_account(conn, AccountChange(ALICE, False, "deactivated"))
    resolver = FakeResolver(handles={ALICE: "alice.test"})
    assert await HandleChecker(pool, resolver).run_once() == 0
    async with pool.acquire() as conn:
        await apply_account(conn, AccountChange(ALICE, True, None))
    assert await HandleChecker(pool, resolver).run_once() == 1


async def test_identity_events_request_checks_with_the_cursor(pool, database_url, tmp_path) -> None:
    """The request is in the batch: a consumer that dies before looking up (here: one without a
    resolver) leaves it in the database, and the next one looks it up when it starts."""
    await _track(pool, ALICE)
    await _track(pool, BOB)
    resolver = FakeResolver(handles={ALICE: "alice.test", BOB: "bob.test"})
    await HandleChecker(pool, resolver).run_once()
    frames = [identity_frame(1, ALICE)]
    await replay(pool, database_url, tmp_path, frames, None, verify=False, name="i.bin")
    assert await pool.fetchval("SELECT seq FROM cursors WHERE source = 'capture:i.bin'") == 1
    row = await _state(pool, ALICE)
    assert row["pending"] and row["handle"] == "alice.test"
    assert not (await _state(pool, BOB))["pending"]
    # The next run (with a resolver) picks the request up as it starts.
    resolver.handles[ALICE] = "alice.example"
    frames.append(identity_frame(2, BOB, handle="bob.test"))
    c = await replay(pool, database_url, tmp_path, frames, resolver, name="i.bin")
    assert c.handles is not None
    await asyncio.wait_for(c.handles.wait_idle(), 10)
    assert (await _state(pool, ALICE))["handle"] == "alice.example"
    assert not (await _state(pool, ALICE))["pending"] and not (await _state(pool, BOB))["pending"]
