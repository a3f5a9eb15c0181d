"""Live cutover: backfill and live writes through the same writer, in either order or at once.

The snapshot's ops carry the commit rev; a live op carries its own. Whatever the order of
arrival, the index ends at the newest version of each record, and a newer live delete keeps
the (older) snapshot copy dead.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg

from indexer.backfill.runner import BackfillOptions, run_backfill
from indexer.records import RecordOp
from indexer.writer import apply_batch, default_lexicons
from tests.integration.backfill.conftest import FAST
from tests.integration.backfill.fake_network import FakeNetwork, random_did
from tests.support.repo_builder import build_repo, tid, track

SNAP_REV = tid(10_000_000)
OLDER = tid(9_000_000)
NEWER = tid(11_000_000)


async def live(pool: asyncpg.Pool, *ops: RecordOp) -> None:
    async with pool.acquire() as conn:
        await apply_batch(conn, list(ops), lexicons=default_lexicons(), source="live-test")


async def row(pool: asyncpg.Pool, did: str, rkey: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT cid, rev, title FROM tracks WHERE uri = $1", f"at://{did}/fm.plyr.track/{rkey}"
    )


def snapshot_repo(did: str):
    return build_repo(did, [("fm.plyr.track", tid(i), track(i)) for i in range(4)], rev=SNAP_REV)


async def test_newer_live_writes_survive_an_older_backfill(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    did = random_did()
    net.host(snapshot_repo(did))
    # live, before the backfill lands: track 0 edited, track 1 deleted, track 9 created (all newer)
    await live(
        pool,
        RecordOp(
            "update",
            did,
            "fm.plyr.track",
            tid(0),
            NEWER,
            "bafyreilivecid0",
            track(0, title="Live edit"),
        ),
        RecordOp("delete", did, "fm.plyr.track", tid(1), NEWER),
        RecordOp("create", did, "fm.plyr.track", tid(9), NEWER, "bafyreilivecid9", track(9)),
    )
    summary = await run_backfill(
        pool, BackfillOptions(dids=[did], politeness=FAST), resolver=resolver
    )
    assert summary.done == 1
    r0 = await row(pool, did, tid(0))
    assert r0 is not None and r0["title"] == "Live edit" and r0["rev"] == NEWER
    assert await row(pool, did, tid(1)) is None  # the newer delete wins over the snapshot copy
    r9 = await row(pool, did, tid(9))
    assert r9 is not None and r9["rev"] == NEWER  # not in the snapshot, but newer: kept
    for i in (2, 3):
        r = await row(pool, did, tid(i))
        assert r is not None and r["rev"] == SNAP_REV
    assert await pool.fetchval("SELECT repo_rev FROM actors WHERE did = $1", did) == NEWER


async def test_older_live_events_after_a_backfill_are_ignored_newer_ones_apply(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    did = random_did()
    net.host(snapshot_repo(did))
    await run_backfill(pool, BackfillOptions(dids=[did], politeness=FAST), resolver=resolver)
    before = await row(pool, did, tid(0))
    # a replayed, older event: ignored
    await live(
        pool,
        RecordOp(
            "update", did, "fm.plyr.track", tid(0), OLDER, "bafyreiold", track(0, title="Old")
        ),
        RecordOp("delete", did, "fm.plyr.track", tid(1), OLDER),
    )
    assert await row(pool, did, tid(0)) == before
    assert await row(pool, did, tid(1)) is not None
    # a newer one: applied
    await live(
        pool,
        RecordOp(
            "update", did, "fm.plyr.track", tid(0), NEWER, "bafyreinew", track(0, title="New")
        ),
    )
    assert (await row(pool, did, tid(0)))["title"] == "New"  # type: ignore[index]


async def test_backfill_and_live_writes_at_the_same_time(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    """Many repos backfilled while a live writer edits some records at newer revs concurrently."""
    dids = [random_did() for _ in range(12)]
    for did in dids:
        net.host(snapshot_repo(did))
    net.delay_per_chunk = 0.002  # stretch the fetches so the two writers interleave
    rng = random.Random(5)
    live_ops = []
    for n, did in enumerate(dids):
        k = rng.randrange(4)
        live_ops.append(
            RecordOp(
                "update",
                did,
                "fm.plyr.track",
                tid(k),
                tid(11_000_000 + n),
                f"bafyreilive{n}",
                track(k, title=f"Live {n}"),
            )
        )

    async def live_writer() -> None:
        for op in live_ops:
            await live(pool, op)
            await asyncio.sleep(0.005)

    summary, _ = await asyncio.gather(
        run_backfill(pool, BackfillOptions(dids=dids, politeness=FAST), resolver=resolver),
        live_writer(),
    )
    assert summary.done == 12
    for n, op in enumerate(live_ops):
        r = await row(pool, op.did, op.rkey)
        assert r is not None and r["title"] == f"Live {n}" and r["rev"] == op.rev
        count = await pool.fetchval("SELECT count(*) FROM tracks WHERE did = $1", op.did)
        assert count == 4
