"""The resync loop (actors.needs_resync) and `plyr audit` (missing / extra / stale / invalid,
repair)."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
from prometheus_client import REGISTRY

from core.runtime import Runtime
from core.settings import CoreSettings
from indexer.backfill.audit import pick_repos, run_audit
from indexer.backfill.resync import run_resync_loop
from indexer.backfill.runner import BackfillOptions, open_syncer, run_backfill
from tests.integration.backfill.conftest import FAST
from tests.integration.backfill.fake_network import FakeNetwork, random_did
from tests.integration.backfill.test_backfill_flow import index_of, plyr_repo, truth
from tests.support.repo_builder import build_repo, tid, track


async def test_resync_loop_fetches_marked_repos_and_clears_the_mark(
    pool: asyncpg.Pool, database_url: str, net: FakeNetwork, resolver
) -> None:
    repo, failing = plyr_repo(seed=1), plyr_repo(seed=2)
    net.host(repo)
    net.host(failing, "500")
    await pool.execute(
        """INSERT INTO actors (did, needs_resync, resync_reason) VALUES ($1, true, 'sync event'),
           ($2, true, 'tooBig')""",
        repo.did,
        failing.did,
    )
    rt = Runtime(settings=CoreSettings.from_env(), database_url=database_url, pool=pool, identity=resolver)
    task = asyncio.create_task(
        run_resync_loop(rt, interval=0.05, politeness=FAST, resolver=resolver)
    )
    try:
        for _ in range(200):
            if await index_of(pool, repo.did) and await pool.fetchval(
                "SELECT status FROM backfill_repos WHERE did = $1", failing.did
            ):
                break
            await asyncio.sleep(0.05)
    finally:
        rt.stopping.set()
        await asyncio.wait_for(task, 5)
    assert await index_of(pool, repo.did) == truth(repo)
    marks = {
        r["did"]: (r["needs_resync"], r["resync_reason"])
        for r in await pool.fetch("SELECT did, needs_resync, resync_reason FROM actors")
    }
    assert marks[repo.did] == (False, None)
    assert marks[failing.did] == (True, "tooBig")  # still marked; retried later with backoff
    st = await pool.fetchrow(
        "SELECT status, attempts FROM backfill_repos WHERE did = $1", failing.did
    )
    assert st["status"] == "failed" and st["attempts"] == 1
    # the backoff keeps the failing repo from being fetched again right away
    assert net.requests[("getRepo", failing.did)] == 3  # one sync = 1 try + 2 retries


async def test_mark_for_a_newer_rev_is_not_cleared_by_an_older_snapshot(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    repo = plyr_repo()
    net.host(repo)
    newer = "3zzzzzzzzzzzz"
    await pool.execute(
        "INSERT INTO actors (did, needs_resync, resync_reason, repo_rev) VALUES ($1, true, 'rev gap', $2)",
        repo.did,
        newer,
    )
    await run_backfill(pool, BackfillOptions(dids=[repo.did], politeness=FAST), resolver=resolver)
    assert await pool.fetchval("SELECT needs_resync FROM actors WHERE did = $1", repo.did) is True


async def test_audit_reports_drift_and_repair_fixes_it(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    repos = [plyr_repo(seed=i) for i in range(3)]
    for r in repos:
        net.host(r)
    await run_backfill(
        pool, BackfillOptions(dids=[r.did for r in repos], politeness=FAST), resolver=resolver
    )
    a, b, c = repos
    uris = sorted(truth(a))
    # drift by hand: a row deleted (missing), a row invented (extra), a cid changed (stale)
    await pool.execute(
        "DELETE FROM tracks WHERE uri = $1", [u for u in uris if "/fm.plyr.track/" in u][0]
    )
    await pool.execute(
        """INSERT INTO likes (uri, did, rkey, cid, rev, subject_uri, subject_cid, created_at, sort_at)
           VALUES ($1, $2, 'zzzz', 'bafyreiextra', '2aaaaaaaaaaaa', 's', 'c', now(), now())""",
        f"at://{b.did}/fm.plyr.like/zzzz",
        b.did,
    )
    await pool.execute(
        "UPDATE tracks SET cid = 'bafyreistale', rev = '2aaaaaaaaaaaa' WHERE did = $1 AND rkey = (SELECT min(rkey) FROM tracks WHERE did = $1)",
        c.did,
    )

    async with open_syncer(pool, politeness=FAST, resolver=resolver) as syncer:
        dids = await pick_repos(pool, sample=None, dids=None)
        assert sorted(dids) == sorted(r.did for r in repos)
        report = await run_audit(syncer, dids)
        assert (report.total("missing"), report.total("extra"), report.total("stale")) == (1, 1, 1)
        assert {r.did for r in report.drifted} == {a.did, b.did, c.did}
        assert "missing 1, extra 1, stale 1" in report.lines()[-1]
        assert REGISTRY.get_sample_value("plyr_audit_last", {"figure": "missing"}) == 1
        assert REGISTRY.get_sample_value("plyr_audit_last", {"figure": "repos_drifted"}) == 3

        repaired = await run_audit(syncer, dids, repair=True)
        assert all(r.repaired for r in repaired.drifted)
        clean = await run_audit(syncer, dids)
        assert not clean.drifted and not clean.failed
        assert REGISTRY.get_sample_value("plyr_audit_last", {"figure": "missing"}) == 0
    for r in repos:
        assert await index_of(pool, r.did) == truth(r)
    runs = await pool.fetch("SELECT missing, extra, stale, repaired FROM audit_runs ORDER BY id")
    assert [tuple(x) for x in runs] == [(1, 1, 1, 0), (1, 1, 1, 3), (0, 0, 0, 0)]


async def _plyr(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_backfill_and_audit(
    pool: asyncpg.Pool, database_url: str, net: FakeNetwork, tmp_path
) -> None:
    good, bad = plyr_repo(seed=1), plyr_repo(seed=2)
    net.host(good)
    net.host(bad, "badsig")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PLYR_PLC_URL": net.base,
        "PLYR_LOG_LEVEL": "WARNING",
    }
    dids = tmp_path / "dids.txt"
    dids.write_text(f"# test\n{good.did}\n{bad.did}\n")

    code, out, err = await _plyr("backfill", "--dids-file", str(dids), "--dry-run", env=env)
    assert code == 0, err
    assert "2 to fetch" in out

    code, out, err = await _plyr("backfill", "--dids-file", str(dids), "--retries", "0", env=env)
    assert code == 1, err
    assert "1 repo(s) done, 1 failed" in out
    assert f"{bad.did}: bad commit signature" in out
    assert "Traceback" not in err

    code, out, err = await _plyr("audit", "--did", good.did, env=env)
    assert code == 0, out + err
    await pool.execute(
        "DELETE FROM tracks WHERE did = $1 AND rkey = (SELECT min(rkey) FROM tracks WHERE did = $1)",
        good.did,
    )
    code, out, err = await _plyr("audit", "--all", env=env)
    assert code == 1
    assert "missing 1, extra 0, stale 0" in out
    code, out, err = await _plyr("audit", "--all", "--repair", env=env)
    assert code == 0, out + err
    assert "(repaired)" in out
    code, out, err = await _plyr("audit", "--sample", "0", env=env)
    assert code == 1 and "--sample must be at least 1" in err


async def test_audit_judges_what_the_pds_serves_with_the_writers_rule(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    """Issue 10: valid records the index dropped are missing, invalid ones it serves are
    `invalid`; --repair converges both and a second audit is clean."""
    did = random_did()
    good, big, empty, badkey = tid(1), tid(2), tid(3), "my-favourite-track"
    repo = build_repo(did, [
        ("fm.plyr.track", good, track(1)),
        ("fm.plyr.track", big, track(2) | {"duration": 3_000_000_000}),
        ("fm.plyr.track", empty, track(3) | {"title": ""}),
        ("fm.plyr.track", badkey, track(4)),
    ])  # fmt: skip
    net.host(repo)
    await run_backfill(pool, BackfillOptions(dids=[did], politeness=FAST), resolver=resolver)
    indexed = set(await index_of(pool, did))
    assert indexed == {f"at://{did}/fm.plyr.track/{good}", f"at://{did}/fm.plyr.track/{big}"}

    # An index written by the code before the fix, wrong the ways issue 10 found: a valid record
    # dropped, invalid ones (an earlier valid version of `empty`, a wrong-key record) served,
    # and no tombstones hiding them.
    await pool.execute("DELETE FROM tracks WHERE uri = $1", f"at://{did}/fm.plyr.track/{big}")
    await pool.execute("DELETE FROM tombstones WHERE did = $1", did)
    for rkey in (empty, badkey):
        await pool.execute(
            """INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, file_type, record,
                                   created_at, sort_at)
               VALUES ($1, $2, $3, 'bafyreiold', '2aaaaaaaaaaaa', 'Old', 'A', 'mp3', '{}', now(), now())""",
            f"at://{did}/fm.plyr.track/{rkey}", did, rkey,
        )  # fmt: skip
    async with open_syncer(pool, politeness=FAST, resolver=resolver) as syncer:
        report = await run_audit(syncer, [did])
        kinds = ("missing", "extra", "stale", "invalid")
        assert tuple(report.total(k) for k in kinds) == (1, 0, 0, 2)
        assert "invalid 2" in report.lines()[-1]
        repaired = await run_audit(syncer, [did], repair=True)
        assert all(r.repaired for r in repaired.drifted)
        clean = await run_audit(syncer, [did])
        assert not clean.drifted and not clean.failed
    assert set(await index_of(pool, did)) == indexed
    row = await pool.fetchrow("SELECT invalid FROM audit_runs ORDER BY id LIMIT 1")
    assert row["invalid"] == 2
