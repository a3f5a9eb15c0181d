"""The label subscriber against a real WebSocket labeler on loopback and a real Postgres:
backfill, resume, negation and order, expiry, refusals, key rotation, dropped and silent
streams, FutureCursor."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from core.runtime import Runtime
from core.settings import CoreSettings, LabelSettings
from indexer.labels.service import run_labels
from indexer.labels.subscriber import Subscriber
from indexer.labels.sweep import TakedownSweeper
from protocol.crypto import PrivateKey
from protocol.data_model import encode_dag_cbor_exact
from protocol.identity import IdentityResolver
from protocol.labels import encode_info_frame, encode_labels_frame
from tests.integration.indexer.firehose_server import Blackhole
from tests.integration.labels.conftest import (
    cursor_of,
    make_subscriber,
    running,
    until,
    wait_cursor,
)
from tests.integration.labels.fake_labeler import FakeLabeler, iso
from tests.support.frames import STRONG_CID

TRACK = "at://did:plc:artist234567abcdefghijklm/fm.plyr.track/3laaaaaaaaaa2"
TRACK2 = "at://did:plc:artist234567abcdefghijklm/fm.plyr.track/3laaaaaaaaab2"
USER = "did:plc:user2345672abcdefghijklm"


async def stored(pool: asyncpg.Pool, src: str) -> dict[tuple[str, str], asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM labels WHERE src = $1", src)
    return {(r["uri"], r["val"]): r for r in rows}


async def rejects(pool: asyncpg.Pool) -> list[str]:
    return [r["reason"] for r in await pool.fetch("SELECT reason FROM label_rejects ORDER BY id")]


async def test_backfill_from_zero_then_resume_from_the_cursor(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    first = labeler.label(TRACK, "porn", cid=STRONG_CID)
    labeler.emit(first)
    labeler.emit(labeler.label(TRACK2, "spam"), labeler.label(USER, "!warn"))
    labeler.emit(labeler.label(TRACK, "graphic-media", exp=iso(datetime.now(UTC) + timedelta(days=1))))
    sub = make_subscriber(pool, session, resolver, labeler)
    async with running(sub):
        await wait_cursor(pool, labeler.did, 3)
    assert labeler.cursors == [0]  # first start: the whole history
    rows = await stored(pool, labeler.did)
    assert set(rows) == {(TRACK, "porn"), (TRACK2, "spam"), (USER, "!warn"), (TRACK, "graphic-media")}
    porn = rows[(TRACK, "porn")]
    assert porn["cid"] == STRONG_CID and porn["seq"] == 1 and porn["neg"] is False
    assert porn["sig"] == first.sig and porn["view"] == first.to_json(with_sig=False)
    assert "sig" not in porn["view"] and porn["view"]["cts"] == first.cts  # exact strings
    assert rows[(TRACK, "graphic-media")]["exp"] is not None

    # Stopped; the labeler goes on; a restart asks from the stored cursor and loses nothing.
    labeler.emit(labeler.label(TRACK2, "nudity"))
    labeler.emit(labeler.label(TRACK2, "spam", neg=True))
    sub = make_subscriber(pool, session, resolver, labeler)
    async with running(sub):
        await wait_cursor(pool, labeler.did, 5)
    assert labeler.cursors == [0, 3]
    rows = await stored(pool, labeler.did)
    assert len(rows) == 5 and rows[(TRACK2, "spam")]["neg"] is True and rows[(TRACK2, "spam")]["seq"] == 5
    assert await rejects(pool) == []


async def test_newest_cts_wins_negation_stays_and_expiry_is_stored(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    old_cts = labeler.tick()
    labeler.emit(labeler.label(TRACK, "spam"))
    labeler.emit(labeler.label(TRACK, "spam", neg=True))
    # Older than the negation (a late or replayed label): ignored.
    labeler.emit(labeler.label(TRACK, "spam", cts=old_cts))
    # Already expired: stored (it is the newest state of its key), but not active.
    labeler.emit(labeler.label(TRACK2, "porn"))
    labeler.emit(labeler.label(TRACK2, "porn", exp=iso(datetime.now(UTC) - timedelta(minutes=1))))
    # A label and its negation with the same cts: the later one in the stream wins.
    same = labeler.tick()
    labeler.emit(labeler.label(USER, "!warn", cts=same), labeler.label(USER, "!warn", cts=same, neg=True))
    sub = make_subscriber(pool, session, resolver, labeler)
    async with running(sub):
        await wait_cursor(pool, labeler.did, 6)
    rows = await stored(pool, labeler.did)
    assert rows[(TRACK, "spam")]["neg"] is True and rows[(TRACK, "spam")]["seq"] == 2
    assert rows[(USER, "!warn")]["neg"] is True
    active = await pool.fetchval(
        "SELECT count(*) FROM labels WHERE uri = $1 AND NOT neg AND (exp IS NULL OR exp > now())", TRACK2
    )
    assert active == 0 and rows[(TRACK2, "porn")]["seq"] == 5
    # A newer label after the negation applies again.
    labeler.emit(labeler.label(TRACK, "spam"))
    sub = make_subscriber(pool, session, resolver, labeler)
    async with running(sub):
        await wait_cursor(pool, labeler.did, 7)
    assert (await stored(pool, labeler.did))[(TRACK, "spam")]["neg"] is False


async def test_refusals_are_recorded_and_the_stream_goes_on(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    forger = PrivateKey.generate()
    labeler.emit(labeler.label(TRACK, "forged", key=forger))  # bad signature
    labeler.emit(labeler.label(TRACK, "imposter", src="did:plc:someoneelse234567abcdefg"))  # wrong src
    labeler.publish(b"\xa1\x61x\x01 not a frame")  # undecodable
    labeler.publish(encode_labels_frame(0, [])[:-1])  # cut short
    labeler.publish(encode_info_frame("OutdatedCursor", "cursor too old"))
    good = labeler.label(TRACK, "good")
    bad_field = {**good.to_ipld(), "val": ""}  # breaks the schema, in a frame with a good label
    labeler.seq += 1
    labeler.publish(
        encode_dag_cbor_exact({"op": 1, "t": "#labels"})
        + encode_dag_cbor_exact({"seq": labeler.seq, "labels": [bad_field, good.to_ipld()]}),
        seq=labeler.seq,
    )
    labeler.emit(labeler.label(TRACK2, "nul\x00"))  # valid, but Postgres text cannot hold it
    labeler.emit(labeler.label(TRACK2, "fine"))
    sub = make_subscriber(pool, session, resolver, labeler)
    async with running(sub):
        await wait_cursor(pool, labeler.did, 5)
    rows = await stored(pool, labeler.did)
    assert set(rows) == {(TRACK, "good"), (TRACK2, "fine")}
    reasons = await rejects(pool)
    assert [r.split(":")[0] for r in reasons] == [
        "bad signature", "wrong src", "malformed frame", "malformed frame", "outdated cursor", "malformed label",
        "unstorable",
    ]  # fmt: skip
    forged = await pool.fetchrow("SELECT src, seq, label FROM label_rejects ORDER BY id LIMIT 1")
    assert forged["src"] == labeler.did and forged["seq"] == 1 and forged["label"]["val"] == "forged"
    assert labeler.cursors == [0]  # nothing refused ever broke the connection


async def test_key_rotation_is_followed_after_one_fresh_lookup(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    labeler.emit(labeler.label(TRACK, "before"))
    sub = make_subscriber(pool, session, resolver, labeler)
    async with running(sub):
        await wait_cursor(pool, labeler.did, 1)
        old = labeler.rotate_key()  # the resolver still holds the old document
        fetches = labeler.plc.requests[labeler.did]
        labeler.emit(labeler.label(TRACK, "after"))
        labeler.emit(labeler.label(TRACK2, "late", key=old))  # signed with the retired key
        await wait_cursor(pool, labeler.did, 3)
    assert set(await stored(pool, labeler.did)) == {(TRACK, "before"), (TRACK, "after")}
    assert [r.split(":")[0] for r in await rejects(pool)] == ["bad signature"]
    assert labeler.plc.requests[labeler.did] - fetches >= 1
    assert labeler.cursors == [0]


async def test_dropped_stream_reconnects_and_continues(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    for n in range(6):
        labeler.emit(labeler.label(f"{TRACK[:-2]}{n}2", "spam"))
    labeler.drop_after = [2, 1]  # cut after 2 frames, then after 1 more
    sub = make_subscriber(pool, session, resolver, labeler)
    async with running(sub):
        await wait_cursor(pool, labeler.did, 6)
    # Cut without a close handshake, a frame sent may never arrive: each reconnect resumes
    # from what was committed, never beyond it.
    assert labeler.cursors[0] == 0 and len(labeler.cursors) == 3
    assert labeler.cursors[1] <= 2 and labeler.cursors[2] >= labeler.cursors[1]
    assert await pool.fetchval("SELECT count(*) FROM labels") == 6
    assert await rejects(pool) == []


async def test_silent_stream_is_noticed_by_the_heartbeat(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    hole = Blackhole(labeler.port)
    await hole.start()
    labeler.publish_document(endpoint=f"http://127.0.0.1:{hole.port}")
    labeler.emit(labeler.label(TRACK, "one"))
    sub = make_subscriber(pool, session, resolver, labeler, heartbeat=0.4)
    try:
        async with running(sub):
            await wait_cursor(pool, labeler.did, 1)
            hole.silent = True  # half-open: nothing gets through, nothing is closed
            labeler.emit(labeler.label(TRACK, "two"))

            async def dropped() -> bool:
                return not sub.connected

            await until(dropped, "the heartbeat to drop the silent connection")
            hole.silent = False
            await wait_cursor(pool, labeler.did, 2)
        assert sub.connections >= 2 and labeler.cursors[-1] == 1
    finally:
        await hole.stop()


async def test_future_cursor_reads_the_stream_again_from_zero(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    labeler.emit(labeler.label(TRACK, "spam"))
    labeler.emit(labeler.label(TRACK, "spam", neg=True))
    await pool.execute("INSERT INTO label_cursors (src, cursor) VALUES ($1, 500)", labeler.did)
    sub = make_subscriber(pool, session, resolver, labeler)
    async with running(sub):
        await wait_cursor(pool, labeler.did, 2)
    assert labeler.cursors == [500, 0]
    assert (await stored(pool, labeler.did))[(TRACK, "spam")]["neg"] is True
    assert [r.split(":")[0] for r in await rejects(pool)] == ["error frame"]


async def test_service_subscribes_every_labeler_under_one_lock(
    pool: asyncpg.Pool, database_url: str, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    other = FakeLabeler(labeler.plc)
    await other.start()
    try:
        labeler.emit(labeler.label(TRACK, "a"))
        other.emit(other.label(TRACK, "b"), other.label(TRACK2, "c"))
        # The runtime opens its own guarded session; loopback allowed, where the labelers are.
        core = CoreSettings.from_env(overrides={"allow_private_network": True})
        rt = Runtime(settings=core, database_url=database_url, pool=pool, identity=resolver)
        settings = LabelSettings(labelers=(labeler.did, other.did))
        started: list[tuple[list[Subscriber], TakedownSweeper]] = []

        def record(subs: list[Subscriber], sweeper: TakedownSweeper) -> None:
            started.append((subs, sweeper))

        task = asyncio.create_task(run_labels(rt, settings, standby_poll=0.05, on_start=record))
        await until(lambda: _true(bool(started)), "the first service to take the lock")
        # A second process waits as a standby: it must not subscribe while the first runs.
        standby = asyncio.create_task(run_labels(rt, settings, standby_poll=0.05, on_start=record))
        try:
            await wait_cursor(pool, labeler.did, 1)
            await wait_cursor(pool, other.did, 1)
            assert len(started) == 1 and labeler.cursors == [0] and other.cursors == [0]
        finally:
            for t in (task, standby):
                t.cancel()
            await asyncio.gather(task, standby, return_exceptions=True)
        assert await pool.fetchval("SELECT count(*) FROM labels") == 3
        assert await cursor_of(pool, other.did) == 1
        if rt.outbound is not None:
            await rt.outbound.close()
    finally:
        await other.stop()


async def _true(value: bool) -> bool:
    return value


async def test_oversized_frames_are_read_with_a_larger_limit_or_skipped(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    # Limits made small for the test: 4 KiB normally, 64 KiB for a message that was too big.
    labeler.emit(labeler.label(TRACK, "before"))
    many = [labeler.label(f"{TRACK}{i}", "bulk") for i in range(60)]  # ~15 KiB: over 4 KiB
    labeler.emit(*many)
    labeler.seq += 1  # seq 3: over even the larger limit
    labeler.publish(b"\xa2" + b"x" * 70_000, seq=labeler.seq)
    labeler.emit(labeler.label(TRACK2, "after"))  # seq 4
    sub = make_subscriber(pool, session, resolver, labeler, max_message=4096, oversized_max_message=65536)
    async with running(sub):
        await wait_cursor(pool, labeler.did, 4)
    rows = await stored(pool, labeler.did)
    assert (TRACK, "before") in rows and (TRACK2, "after") in rows
    assert sum(1 for uri, val in rows if val == "bulk") == 60  # read with the larger limit
    reasons = await rejects(pool)
    assert all(r.startswith("oversized frame") for r in reasons), reasons
    assert [("skipped" in r) for r in reasons] == [False, False, True], reasons
    # At 0 (seq 2 too big), at 1 with the larger limit (seq 2 read, seq 3 too big), at 2 with
    # it again (seq 3 still too big: skipped), at 3 (seq 4 read). Nothing else was lost.
    assert labeler.cursors == [0, 1, 2, 3], labeler.cursors
