"""Backfill against a local PLC/PDS/relay serving real signed CARs, into a real Postgres."""

from __future__ import annotations

import random

import asyncpg

from indexer.backfill import state
from indexer.backfill.runner import BackfillOptions, run_backfill
from protocol.cid import cid_to_str
from tests.integration.backfill.conftest import FAST
from tests.integration.backfill.fake_network import FakeNetwork, random_did
from tests.support.repo_builder import BuiltRepo, build_repo, like, post, tid, track

INDEX_ROWS = """
SELECT uri, cid FROM tracks WHERE did = $1 UNION ALL SELECT uri, cid FROM likes WHERE did = $1
UNION ALL SELECT uri, cid FROM comments WHERE did = $1 UNION ALL SELECT uri, cid FROM lists WHERE did = $1
UNION ALL SELECT uri, cid FROM profiles WHERE did = $1
"""


def plyr_repo(
    n_tracks: int = 5, n_posts: int = 40, seed: int = 1, rev_n: int = 10_000_000
) -> BuiltRepo:
    did = random_did()
    rng = random.Random(seed)
    recs = [("fm.plyr.track", tid(i), track(i)) for i in range(n_tracks)]
    recs += [
        (
            "fm.plyr.like",
            tid(1000 + i),
            like(f"at://{did}/fm.plyr.track/{tid(i)}", "bafyreib2rxk3rh6kzwq"),
        )
        for i in range(2)
    ]
    recs += [("app.bsky.feed.post", tid(5000 + i), post(i, rng)) for i in range(n_posts)]
    return build_repo(did, recs, rev=tid(rev_n))


async def index_of(pool: asyncpg.Pool, did: str) -> dict[str, str]:
    return {r["uri"]: r["cid"] for r in await pool.fetch(INDEX_ROWS, did)}


def truth(repo: BuiltRepo) -> dict[str, str]:
    return {f"at://{repo.did}/{k}": v for k, v in repo.plyr_records().items()}


async def test_backfill_from_pds_indexes_good_repos_and_records_each_failure(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    good = [plyr_repo(seed=i) for i in range(3)]
    for repo in good:
        net.host(repo)
    bad = {}
    for mode in ("truncated", "tampered", "badsig", "html", "500", "nodoc", "cut"):
        repo = plyr_repo(seed=hash(mode) % 100)
        net.host(repo, mode)
        bad[mode] = repo.did

    summary = await run_backfill(
        pool, BackfillOptions(pds=[net.base], politeness=FAST), resolver=resolver
    )

    assert summary.discovered == 10 and summary.queued == 10
    assert summary.done == 3
    for repo in good:
        assert await index_of(pool, repo.did) == truth(repo)
        st = await state.get(pool, repo.did)
        assert st is not None and st.status == "done" and st.rev == repo.rev and st.records == 7
    reasons = dict(summary.failures)
    assert set(reasons) == set(bad.values())
    assert "truncated" in reasons[bad["truncated"]]
    assert "does not match its CID" in reasons[bad["tampered"]]
    assert "bad commit signature" in reasons[bad["badsig"]]
    assert "text/html" in reasons[bad["html"]]
    assert "HTTP 500" in reasons[bad["500"]]
    assert "cannot resolve DID" in reasons[bad["nodoc"]]
    assert "cut short" in reasons[bad["cut"]]
    # transient failures were retried (retries=2: three requests), permanent ones were not
    assert net.requests[("getRepo", bad["500"])] == 3
    assert net.requests[("getRepo", bad["cut"])] == 3
    assert net.requests[("getRepo", bad["html"])] == 1
    for did in bad.values():
        st = await state.get(pool, did)
        assert st is not None and st.status == "failed" and st.reason
        assert await index_of(pool, did) == {}
    lines = "\n".join(summary.lines())
    assert "3 repo(s) done, 7 failed" in lines and bad["badsig"] in lines


async def test_resumable_and_retry_failed(pool: asyncpg.Pool, net: FakeNetwork, resolver) -> None:
    a, b = plyr_repo(seed=1), plyr_repo(seed=2)
    net.host(a)
    hb = net.host(b, "500")
    opts = BackfillOptions(dids=[a.did, b.did], politeness=FAST)
    first = await run_backfill(pool, opts, resolver=resolver)
    assert first.done == 1 and [d for d, _ in first.failures] == [b.did]

    hb.mode = "good"
    again = await run_backfill(pool, opts, resolver=resolver)
    assert again.queued == 0  # done stays done, failed waits for --retry-failed
    assert net.requests[("getRepo", a.did)] == 1

    opts.retry_failed = True
    third = await run_backfill(pool, opts, resolver=resolver)
    assert third.queued == 1 and third.done == 1 and not third.failures
    assert await index_of(pool, b.did) == truth(b)
    assert (await state.get(pool, b.did)).attempts == 0  # type: ignore[union-attr]

    opts.retry_failed, opts.force = False, True
    forced = await run_backfill(pool, opts, resolver=resolver)
    assert forced.queued == 2 and forced.done == 2


async def test_interrupted_backfill_continues_with_pending_repos(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    repos = [plyr_repo(seed=i) for i in range(4)]
    for r in repos:
        net.host(r)
    # as if a previous run discovered all four and stopped after the first
    await state.add_repos(pool, {r.did: "pds" for r in repos})
    await run_backfill(
        pool, BackfillOptions(dids=[repos[0].did], politeness=FAST), resolver=resolver
    )
    assert await state.todo(pool, None, retry_failed=False) == sorted(r.did for r in repos[1:])
    summary = await run_backfill(
        pool, BackfillOptions(pds=[net.base], politeness=FAST), resolver=resolver
    )
    assert summary.queued == 3 and summary.done == 3
    assert net.requests[("getRepo", repos[0].did)] == 1


async def test_relay_discovery_and_dry_run(pool: asyncpg.Pool, net: FakeNetwork, resolver) -> None:
    with_plyr = [plyr_repo(seed=i) for i in range(5)]
    rng = random.Random(9)
    only_bsky = build_repo(
        random_did(), [("app.bsky.feed.post", tid(i), post(i, rng)) for i in range(10)]
    )
    for r in [*with_plyr, only_bsky]:
        net.host(r)
    dry = await run_backfill(
        pool, BackfillOptions(relay=net.base, dry_run=True, politeness=FAST), resolver=resolver
    )
    assert dry.discovered == 5 and dry.queued == 5 and dry.estimate_s is not None
    assert not any(k[0] == "getRepo" for k in net.requests)  # fetched nothing
    assert "5 to fetch" in dry.lines(dry_run=True)[0]
    # paged: 5 repos with tracks at 2 a page = 3 requests; likes likewise
    assert net.requests[("listReposByCollection", "fm.plyr.track")] == 3
    summary = await run_backfill(
        pool, BackfillOptions(relay=net.base, politeness=FAST), resolver=resolver
    )
    assert summary.done == 5 and summary.records == 35


async def test_rate_limited_repo_is_fetched_after_retry_after(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    repo = plyr_repo()
    net.host(repo, "429", fail_times=2)
    summary = await run_backfill(
        pool, BackfillOptions(dids=[repo.did], politeness=FAST), resolver=resolver
    )
    assert summary.done == 1 and summary.rate_limited == 2
    assert summary.seconds >= 1.9  # Retry-After: 1, twice
    assert await index_of(pool, repo.did) == truth(repo)


async def test_deactivated_and_unknown_repos_fail_with_the_pds_reason(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    repo = plyr_repo()
    net.host(repo).active = False
    summary = await run_backfill(
        pool, BackfillOptions(dids=[repo.did], politeness=FAST), resolver=resolver
    )
    assert "RepoDeactivated" in dict(summary.failures)[repo.did]
    assert net.requests[("getRepo", repo.did)] == 1


async def test_records_gone_from_the_repo_are_deleted(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    old = plyr_repo(n_tracks=6, rev_n=10_000_000)
    net.host(old)
    await run_backfill(pool, BackfillOptions(dids=[old.did], politeness=FAST), resolver=resolver)
    assert len(await index_of(pool, old.did)) == 8
    # the repo moves on: track 5 deleted, track 0 edited
    recs = [
        (
            "fm.plyr.track",
            tid(i),
            track(i, album="B-sides" if i == 0 else None) if i == 0 else track(i),
        )
        for i in range(5)
    ]
    recs += [
        (
            "fm.plyr.like",
            tid(1000 + i),
            like(f"at://{old.did}/fm.plyr.track/{tid(i)}", "bafyreib2rxk3rh6kzwq"),
        )
        for i in range(2)
    ]
    new = build_repo(old.did, recs, key=old.key, rev=tid(10_000_100))
    net.host(new)
    summary = await run_backfill(
        pool, BackfillOptions(dids=[old.did], force=True, politeness=FAST), resolver=resolver
    )
    assert summary.done == 1
    assert await index_of(pool, old.did) == truth(new)
    tomb = await pool.fetchval(
        "SELECT rev FROM tombstones WHERE uri = $1", f"at://{old.did}/fm.plyr.track/{tid(5)}"
    )
    assert tomb == new.rev
    assert await pool.fetchval("SELECT repo_rev FROM actors WHERE did = $1", old.did) == new.rev
    assert await pool.fetchval("SELECT pds_url FROM actors WHERE did = $1", old.did) == net.base


async def test_invalid_records_are_dead_lettered_once(
    pool: asyncpg.Pool, net: FakeNetwork, resolver
) -> None:
    did = random_did()
    bad_track = {
        "$type": "fm.plyr.track",
        "title": "",
        "artist": "x",
        "fileType": "mp3",
        "createdAt": "2024-01-01T00:00:00Z",
    }
    repo = build_repo(
        did, [("fm.plyr.track", tid(1), track(1)), ("fm.plyr.track", tid(2), bad_track)]
    )
    net.host(repo)
    for _ in range(2):
        await run_backfill(
            pool, BackfillOptions(dids=[did], force=True, politeness=FAST), resolver=resolver
        )
    assert len(await index_of(pool, did)) == 1
    rows = await pool.fetch("SELECT uri, cid, source FROM dead_letters WHERE did = $1", did)
    assert len(rows) == 1 and rows[0]["uri"].endswith(tid(2)) and rows[0]["source"] == "backfill"
    assert rows[0]["cid"] == cid_to_str(repo.records[f"fm.plyr.track/{tid(2)}"][0])


async def test_unreachable_discovery_source_is_one_clear_error(
    pool: asyncpg.Pool, resolver
) -> None:
    import pytest

    from core.errors import PlyrError

    with pytest.raises(PlyrError, match="repo discovery failed: listRepos .*cannot reach"):
        await run_backfill(
            pool, BackfillOptions(pds=["http://127.0.0.1:9"], politeness=FAST), resolver=resolver
        )
