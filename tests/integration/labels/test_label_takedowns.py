"""Account takedowns by moderation labelers: the actor is hidden and its rows leave the counts
exactly as an inactive account's do; a negation (or expiry) brings it back; a reactivation on
its PDS does not."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from indexer.labels.sweep import TakedownSweeper
from indexer.records import RecordOp
from indexer.writer import AccountChange, apply_account, apply_batch, default_lexicons, recount
from protocol.identity import IdentityResolver
from protocol.syntax import tid_from_micros
from tests.integration.labels.conftest import make_subscriber, running, until, wait_cursor
from tests.integration.labels.fake_labeler import FakeLabeler, iso
from tests.support.frames import STRONG_CID, comment_record, like_record, track_record
from tests.support.rkeys import tid_key

ALICE = "did:plc:alice234567abcdefghijklm"
BOB = "did:plc:bob234567abcdefghijklmno"


def op(did: str, collection: str, rkey: str, record: dict) -> RecordOp:
    rev = tid_from_micros(1_767_225_600_000_000 + len(rkey) * 1000)
    return RecordOp("create", did, collection, tid_key(rkey), rev, STRONG_CID, record)


def track_uri(did: str, rkey: str = "t1") -> str:
    return f"at://{did}/fm.plyr.track/{tid_key(rkey)}"


async def seed(pool: asyncpg.Pool) -> None:
    """Alice and Bob each have a track; Alice likes and comments on Bob's, Bob likes his own."""
    ops = [
        op(ALICE, "fm.plyr.track", "t1", track_record("Alice's")),
        op(BOB, "fm.plyr.track", "t1", track_record("Bob's")),
        op(ALICE, "fm.plyr.like", "l1", like_record(track_uri(BOB))),
        op(ALICE, "fm.plyr.comment", "c1", comment_record(track_uri(BOB))),
        op(BOB, "fm.plyr.like", "l1", like_record(track_uri(BOB))),
    ]
    async with pool.acquire() as conn:
        await apply_batch(conn, ops, lexicons=default_lexicons())


async def counters(pool: asyncpg.Pool) -> tuple[tuple[int, int], tuple[int, ...]]:
    """Bob's track's (likes, comments) and the platform totals (tracks, artists, likes, comments)."""
    row = await pool.fetchrow(
        "SELECT like_count, comment_count FROM track_counts WHERE subject_uri = $1", track_uri(BOB)
    )
    totals = await pool.fetchrow(
        "SELECT sum(tracks), sum(artists), sum(likes), sum(comments) FROM index_totals"
    )
    return (row["like_count"], row["comment_count"]), tuple(int(v) for v in totals.values())


async def assert_counts_exact(pool: asyncpg.Pool) -> None:
    """A rebuild of every counter from the rows changes nothing."""
    before = await counters(pool)
    async with pool.acquire() as conn:
        await recount(conn)
    assert await counters(pool) == before


async def actor(pool: asyncpg.Pool, did: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT status, visible, moderation_takedown FROM actors WHERE did = $1", did)


async def wait_visible(pool: asyncpg.Pool, did: str, visible: bool) -> None:
    async def reached() -> bool:
        row = await actor(pool, did)
        return row is not None and row["visible"] is visible

    await until(reached, f"{did} visible={visible}")


async def test_takedown_hides_the_account_and_moves_counts_negation_restores(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    await seed(pool)
    shown = await counters(pool)
    assert shown == ((2, 1), (2, 2, 2, 1))
    labeler.emit(labeler.label(ALICE, "!takedown"))
    sub = make_subscriber(pool, session, resolver, labeler, moderation=frozenset({labeler.did}))
    async with running(sub):
        await wait_cursor(pool, labeler.did, 1)
        row = await actor(pool, ALICE)
        assert row is not None and (row["status"], row["visible"], row["moderation_takedown"]) == ("active", False, True)
        # Alice's like and comment leave Bob's track; her track leaves the totals.
        assert await counters(pool) == ((1, 0), (1, 1, 1, 0))
        await assert_counts_exact(pool)

        # Her PDS says the account is active again: the takedown still holds.
        async with pool.acquire() as conn:
            outcome = await apply_account(conn, AccountChange(ALICE, True))
        assert outcome == "active, kept hidden (moderation takedown)"
        assert (await actor(pool, ALICE))["visible"] is False  # type: ignore[index]
        assert await counters(pool) == ((1, 0), (1, 1, 1, 0))

        labeler.emit(labeler.label(ALICE, "!takedown", neg=True))
        await wait_cursor(pool, labeler.did, 2)
    row = await actor(pool, ALICE)
    assert row is not None and (row["visible"], row["moderation_takedown"]) == (True, False)
    assert await counters(pool) == shown
    await assert_counts_exact(pool)


async def test_deactivated_account_stays_hidden_when_the_takedown_is_lifted(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    await seed(pool)
    shown = await counters(pool)
    labeler.emit(labeler.label(ALICE, "!suspend"))
    sub = make_subscriber(pool, session, resolver, labeler, moderation=frozenset({labeler.did}))
    async with running(sub):
        await wait_cursor(pool, labeler.did, 1)
        async with pool.acquire() as conn:
            assert await apply_account(conn, AccountChange(ALICE, False, "deactivated")) == "hidden"
        labeler.emit(labeler.label(ALICE, "!suspend", neg=True))
        await wait_cursor(pool, labeler.did, 2)
        row = await actor(pool, ALICE)
        assert row is not None and (row["status"], row["visible"], row["moderation_takedown"]) == ("deactivated", False, False)
        assert await counters(pool) == ((1, 0), (1, 1, 1, 0))  # moved out once, not twice
        async with pool.acquire() as conn:
            assert await apply_account(conn, AccountChange(ALICE, True)) == "shown"
    assert await counters(pool) == shown
    await assert_counts_exact(pool)


async def test_only_moderation_labelers_take_accounts_down(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    await seed(pool)
    labeler.emit(labeler.label(ALICE, "!takedown"), labeler.label(track_uri(BOB), "!takedown"))
    sub = make_subscriber(pool, session, resolver, labeler, moderation=frozenset({"did:plc:someoneelse234567abcdefg"}))
    async with running(sub):
        await wait_cursor(pool, labeler.did, 1)
    assert await pool.fetchval("SELECT count(*) FROM labels") == 2  # stored for the views
    assert (await actor(pool, ALICE))["visible"] is True  # type: ignore[index]


async def test_takedown_of_an_unknown_account_is_remembered(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    labeler.emit(labeler.label(ALICE, "!takedown"))
    sub = make_subscriber(pool, session, resolver, labeler, moderation=frozenset({labeler.did}))
    async with running(sub):
        await wait_cursor(pool, labeler.did, 1)
    row = await actor(pool, ALICE)
    assert row is not None and (row["status"], row["visible"], row["moderation_takedown"]) == ("active", False, True)
    await seed(pool)  # her records arrive later: they stay out of the counts
    assert await counters(pool) == ((1, 0), (1, 1, 1, 0))
    await assert_counts_exact(pool)


async def test_two_moderation_labelers_both_must_lift(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    await seed(pool)
    other = FakeLabeler(labeler.plc)
    await other.start()
    try:
        moderation = frozenset({labeler.did, other.did})
        labeler.emit(labeler.label(ALICE, "!takedown"))
        other.emit(other.label(ALICE, "!suspend"))
        subs = [make_subscriber(pool, session, resolver, lab, moderation=moderation) for lab in (labeler, other)]
        async with running(subs[0]), running(subs[1]):
            await wait_cursor(pool, labeler.did, 1)
            await wait_cursor(pool, other.did, 1)
            assert (await actor(pool, ALICE))["visible"] is False  # type: ignore[index]
            labeler.emit(labeler.label(ALICE, "!takedown", neg=True))
            await wait_cursor(pool, labeler.did, 2)
            assert (await actor(pool, ALICE))["moderation_takedown"] is True  # type: ignore[index]
            other.emit(other.label(ALICE, "!suspend", neg=True))
            await wait_cursor(pool, other.did, 2)
            assert (await actor(pool, ALICE))["visible"] is True  # type: ignore[index]
        await assert_counts_exact(pool)
    finally:
        await other.stop()


async def test_expired_takedown_is_lifted_by_the_sweep(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, resolver: IdentityResolver, labeler: FakeLabeler
) -> None:
    await seed(pool)
    shown = await counters(pool)
    moderation = frozenset({labeler.did})
    sweeper = TakedownSweeper(pool, moderation, interval=60.0)
    # Already expired on arrival: never applies.
    labeler.emit(labeler.label(ALICE, "!takedown", exp=iso(datetime.now(UTC) - timedelta(seconds=1))))
    sub = make_subscriber(pool, session, resolver, labeler, moderation=moderation,
                          on_takedown_expiry=sweeper.poke.set)  # fmt: skip
    sweep = asyncio.create_task(sweeper.run())
    try:
        async with running(sub):
            await wait_cursor(pool, labeler.did, 1)
            assert (await actor(pool, ALICE))["visible"] is True  # type: ignore[index]
            # Expires in a moment: applies now, lifted by the sweep the label woke up (well
            # before its 60 s interval).
            labeler.emit(labeler.label(ALICE, "!suspend", exp=iso(datetime.now(UTC) + timedelta(seconds=1.5))))
            await wait_cursor(pool, labeler.did, 2)
            assert (await actor(pool, ALICE))["visible"] is False  # type: ignore[index]
            await wait_visible(pool, ALICE, True)
        assert await counters(pool) == shown
        await assert_counts_exact(pool)
    finally:
        sweep.cancel()
        await asyncio.gather(sweep, return_exceptions=True)


async def test_sweep_lifts_takedowns_of_labelers_no_longer_trusted(pool: asyncpg.Pool) -> None:
    await seed(pool)
    shown = await counters(pool)
    src = "did:plc:formermoderator234567abcd"
    await pool.execute(
        """INSERT INTO labels (uri, src, val, cts, sig, view, seq)
           VALUES ($1, $2, '!takedown', now(), '\\x00', '{}', 1)""",
        ALICE, src,
    )  # fmt: skip
    changes, _ = await TakedownSweeper(pool, frozenset({src})).sweep_once()
    assert changes == {ALICE: "taken down, hidden"}
    assert await counters(pool) == ((1, 0), (1, 1, 1, 0))
    changes, _ = await TakedownSweeper(pool, frozenset()).sweep_once()  # no longer listed
    assert changes == {ALICE: "restored, shown"}
    assert await counters(pool) == shown
