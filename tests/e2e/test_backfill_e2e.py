"""Backfill, audit and repair against a real PDS (`@atproto/pds` + PLC on loopback).

Records are written before any indexer runs; the backfill then finds the repos through the
PDS's listRepos, and later through a DID list, and the index must equal what listRecords
serves. A row deleted by hand is reported by the audit and put back by --repair.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from indexer.backfill.audit import run_audit
from indexer.backfill.http import Politeness
from indexer.backfill.runner import BackfillOptions, open_syncer, run_backfill
from indexer.records import INDEXED_COLLECTIONS
from tests.support.identity import local_resolver

from .pds_client import Account, PdsClient, write_op
from .pds_network import PdsNetwork, new_account

pytestmark = pytest.mark.e2e

RULES = Politeness(concurrency=4, per_host=4, retries=2, backoff_base=0.2)
INDEX_ROWS = " UNION ALL ".join(
    f"SELECT uri, cid FROM {t} WHERE did = $1"
    for t in ("tracks", "likes", "comments", "lists", "profiles")
)


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def publish(pds: PdsClient, acct: Account, n_tracks: int) -> None:
    """Tracks, likes, a comment, a list, a profile and some bsky posts; then an edit and a delete."""
    writes: list[dict[str, Any]] = [
        write_op(
            "create",
            "fm.plyr.track",
            value={
                "title": f"Song {i}",
                "artist": "E2E",
                "fileType": "mp3",
                "audioUrl": f"https://cdn.example.com/{i}.mp3",
                "createdAt": now(),
            },
        )
        for i in range(n_tracks)
    ]
    writes += [
        write_op("create", "app.bsky.feed.post", value={"text": f"hello {i}", "createdAt": now()})
        for i in range(5)
    ]
    results = await pds.apply_writes(acct, writes)
    tracks = [r for r in results[:n_tracks]]
    more = [
        write_op(
            "create",
            "fm.plyr.like",
            value={"subject": {"uri": t["uri"], "cid": t["cid"]}, "createdAt": now()},
        )
        for t in tracks[:3]
    ]
    more.append(
        write_op(
            "create",
            "fm.plyr.comment",
            value={
                "subject": {"uri": tracks[0]["uri"], "cid": tracks[0]["cid"]},
                "text": "nice",
                "timestampMs": 1234,
                "createdAt": now(),
            },
        )
    )
    more.append(
        write_op(
            "create",
            "fm.plyr.list",
            value={
                "name": "Mix",
                "listType": "playlist",
                "createdAt": now(),
                "items": [{"subject": {"uri": t["uri"], "cid": t["cid"]}} for t in tracks[:2]],
            },
        )
    )
    more.append(
        write_op(
            "create", "fm.plyr.actor.profile", rkey="self", value={"bio": "hi", "createdAt": now()}
        )
    )
    await pds.apply_writes(acct, more)
    # an update and a delete, so the repo's history is not just creates
    first = tracks[0]["uri"].rsplit("/", 1)[1]
    await pds.put_record(
        acct,
        "fm.plyr.track",
        first,
        {"title": "Song 0 (remaster)", "artist": "E2E", "fileType": "mp3", "createdAt": now()},
    )
    await pds.delete_record(acct, "fm.plyr.track", tracks[-1]["uri"].rsplit("/", 1)[1])


async def served(pds: PdsClient, did: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for collection in INDEXED_COLLECTIONS:
        out.update({r.uri: r.cid for r in await pds.list_records(did, collection)})
    return out


async def indexed(pool: asyncpg.Pool, did: str) -> dict[str, str]:
    return {r["uri"]: r["cid"] for r in await pool.fetch(INDEX_ROWS, did)}


async def test_backfill_from_pds_then_dids_audit_and_repair(
    pds: PdsClient, pds_network: PdsNetwork, pool: asyncpg.Pool, database_url: str
) -> None:
    accounts = [await new_account(pds, pds_network, f"bf{i}") for i in range(3)]
    for i, acct in enumerate(accounts):
        await publish(pds, acct, 4 + i)
    resolver = local_resolver(pds_network.plc_url)
    try:
        # 1. from the PDS's listRepos (other tests' accounts may be listed too: only ours asserted)
        summary = await run_backfill(
            pool, BackfillOptions(pds=[pds_network.pds_url], politeness=RULES), resolver=resolver
        )
        failed = dict(summary.failures)
        for acct in accounts:
            assert acct.did not in failed, failed[acct.did]
            truth = await served(pds, acct.did)
            assert len(truth) >= 9
            assert await indexed(pool, acct.did) == truth

        # 2. new writes and a new account, then from a DID list
        late = await new_account(pds, pds_network, "bflate")
        await publish(pds, late, 3)
        await pds.delete_record(accounts[0], "fm.plyr.actor.profile", "self")
        dids = [a.did for a in [*accounts, late]]
        second = await run_backfill(
            pool, BackfillOptions(dids=dids, force=True, politeness=RULES), resolver=resolver
        )
        assert second.done == 4 and not second.failures
        for did in dids:
            assert await indexed(pool, did) == await served(pds, did)

        # 3. drift by hand: the audit sees it, --repair fixes it
        victim = await pool.fetchval("SELECT uri FROM likes WHERE did = $1 LIMIT 1", late.did)
        await pool.execute("DELETE FROM likes WHERE uri = $1", victim)
        async with open_syncer(pool, politeness=RULES, resolver=resolver) as syncer:
            report = await run_audit(syncer, dids)
            assert [(r.did, r.missing) for r in report.drifted] == [(late.did, [victim])]
            assert report.total("extra") == 0 and report.total("stale") == 0 and not report.failed
            fixed = await run_audit(syncer, dids, repair=True)
            assert [r.repaired for r in fixed.drifted] == [True]
        assert await indexed(pool, late.did) == await served(pds, late.did)
    finally:
        await resolver.close()

    # 4. the command line, as an operator runs it
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        **pds_network.identity_env(),
        "PLYR_LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", "audit", *[a for d in dids for a in ("--did", d)],
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode() + err.decode()
    assert "4 repo(s) checked, 0 drifted" in out.decode()


async def test_backfill_while_the_live_indexer_runs_and_writes_continue(
    pds: PdsClient, pds_network: PdsNetwork, pool: asyncpg.Pool, database_url: str
) -> None:
    from indexer.service import run_indexer
    from indexer.settings import IndexerSettings
    from indexer.sources import RelaySource

    accounts = [await new_account(pds, pds_network, f"lv{i}") for i in range(3)]
    for acct in accounts:
        await publish(pds, acct, 6)  # before any indexer runs: only the backfill can see these
    resolver = local_resolver(pds_network.plc_url)
    source = RelaySource(pds_network.firehose_url)
    live = asyncio.create_task(
        run_indexer(
            database_url, pool, IndexerSettings.from_env(), source, verify=True, resolver=resolver
        )
    )
    try:
        await asyncio.wait_for(source.connected.wait(), 30)

        async def keep_writing() -> None:
            for step in range(12):
                acct = accounts[step % len(accounts)]
                tracks = await pds.list_records(acct.did, "fm.plyr.track")
                target = tracks[step % len(tracks)]
                if step % 4 == 3:
                    await pds.delete_record(acct, "fm.plyr.track", target.rkey)
                else:
                    await pds.put_record(
                        acct,
                        "fm.plyr.track",
                        target.rkey,
                        {
                            **target.value,
                            "title": f"edit {step}",
                            "createdAt": target.value["createdAt"],
                        },
                    )
                    await pds.create_record(
                        acct,
                        "fm.plyr.like",
                        {"subject": {"uri": target.uri, "cid": target.cid}, "createdAt": now()},
                    )
                await asyncio.sleep(0.05)

        summary, _ = await asyncio.gather(
            run_backfill(
                pool,
                BackfillOptions(dids=[a.did for a in accounts], politeness=RULES),
                resolver=resolver,
            ),
            keep_writing(),
        )
        assert summary.done == 3, summary.failures
        # the live indexer catches up; the index must then equal what the PDS serves
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            diffs = {
                a.did: (await indexed(pool, a.did), await served(pds, a.did)) for a in accounts
            }
            if all(i == s for i, s in diffs.values()):
                break
            if asyncio.get_running_loop().time() > deadline:
                for did, (i, s) in diffs.items():
                    assert i == s, f"{did}: index {len(i)} rows vs served {len(s)}"
            await asyncio.sleep(0.3)
        titles = await pool.fetch(
            "SELECT title FROM tracks WHERE did = ANY($1::text[]) AND title LIKE 'edit %'",
            [a.did for a in accounts],
        )
        assert len(titles) >= 5  # live edits landed (and were not undone by the older snapshots)
    finally:
        live.cancel()
        await asyncio.gather(live, return_exceptions=True)
        await resolver.close()
