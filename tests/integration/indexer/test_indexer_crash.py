"""Crash safety of the indexer: SIGKILL the real `plyr index` process and restart it.

A workload of a few thousand frames (signed commits from several repos with creates, updates
and deletes of every fm.plyr collection, foreign commits, account deactivation/reactivation
and one account deletion) is served by a loopback subscribeRepos server
(firehose_server.py) while the test kills `plyr index --url ws://...` (signature checks on,
identities from a local PLC stand-in) at random moments, several times, restarting it each
time; a second variant runs two processes (leader and standby) and kills either. After each
kill the committed state must be consistent (counts equal the rows, list items their count,
the cursor never goes back) and, with one process, equal exactly the events up to the stored
cursor; at the end the index must equal the repos' final contents: no record lost, none
duplicated, counts exact, no dead letters, no repo marked for resync (the rev chain stored
with the cursor stays consistent across crashes).

Deterministic crash points: the real `plyr index` runs with PLYR_CRASH_AT=<point>:<n>
(indexer/crashpoints.py), which calls os._exit(137) at the N-th hit of the seam: rows upserted
but counts and cursor not (rows_written_before_commit); rows, counts and cursor written,
transaction not committed (before_commit); committed but not yet recorded by the consumer
(after_commit_before_ack); the same two seams for account changes (account_before_commit,
account_after_commit).

Also here: every frame of the fuzz corpus (tests/fuzz/corpus), each in a capture before valid
commits, never stops the real consumer; and, in-process with random delays, the cursor of a
committed write never covers an event a later write still holds (the race that would lose it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from protocol.cid import cid_to_str
from protocol.crypto import PrivateKey
from tests.fuzz.frames_corpus import corpus_files
from tests.integration.indexer.firehose_server import FirehoseServer
from tests.support.frames import (
    account_frame,
    comment_record,
    identity_frame,
    like_record,
    list_record,
    post_record,
    profile_record,
    track_record,
    write_capture,
)
from tests.support.identity import local_resolver
from tests.support.repo_builder import RepoBuilder
from tests.support.rkeys import tid_key
from tests.unit.protocol.fake_identity_server import FakeIdentityServer, did_doc

ROOT = Path(__file__).resolve().parents[3]
PLYR = [sys.executable, "-m", "plyr"]
COLLECTIONS = (
    "fm.plyr.track",
    "fm.plyr.like",
    "fm.plyr.comment",
    "fm.plyr.list",
    "fm.plyr.actor.profile",
)
COUNTED = ("fm.plyr.like", "fm.plyr.comment")
WINDOW = 300  # frames the live stream may run ahead of the committed cursor
TABLE = {
    "fm.plyr.track": "tracks", "fm.plyr.like": "likes", "fm.plyr.comment": "comments",
    "fm.plyr.list": "lists", "fm.plyr.actor.profile": "profiles",
}  # fmt: skip


# ---- the workload ------------------------------------------------------------------------------


@dataclass
class Workload:
    frames: list[tuple[int, bytes]]
    keys: dict[str, PrivateKey]
    # did -> path -> (cid string, record): what each repo holds at the end (fm.plyr.* only)
    truth: dict[str, dict[str, tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    # (seq, did, [(path, cid or None for a delete)]) of fm.plyr ops, and account changes as
    # (seq, did, None, status) -- what the index must hold once its cursor is at a given seq.
    events: list[tuple[int, str, list[tuple[str, str | None]] | None, str | None]] = field(
        default_factory=list
    )

    def rows_at(self, seq: int) -> dict[str, str]:
        """uri -> cid the index must hold when everything up to `seq` (and nothing after) is in."""
        rows: dict[str, str] = {}
        gone: set[str] = set()
        for s, did, ops, status in self.events:
            if s > seq:
                break
            if ops is None:
                if status == "deleted":
                    gone.add(did)
                    rows = {u: c for u, c in rows.items() if not u.startswith(f"at://{did}/")}
                continue
            if did in gone:
                continue
            for path, cid in ops:
                uri = f"at://{did}/{path}"
                if cid is None:
                    rows.pop(uri, None)
                else:
                    rows[uri] = cid
        return rows

    @property
    def last_seq(self) -> int:
        return self.frames[-1][0]

    def expected_rows(self) -> dict[str, dict[str, str]]:
        """collection -> uri -> cid, for actors still there at the end."""
        out: dict[str, dict[str, str]] = {c: {} for c in COLLECTIONS}
        for did, records in self.truth.items():
            if did in self.deleted:
                continue
            for path, (cid, _rec) in records.items():
                collection = path.split("/")[0]
                out[collection][f"at://{did}/{path}"] = cid
        return out

    def expected_counts(self) -> dict[str, tuple[int, int]]:
        likes: Counter[str] = Counter()
        comments: Counter[str] = Counter()
        for did, records in self.truth.items():
            if did in self.deleted:
                continue
            for path, (_cid, rec) in records.items():
                collection = path.split("/")[0]
                if collection in COUNTED:
                    (likes if collection == COUNTED[0] else comments)[rec["subject"]["uri"]] += 1
        return {s: (likes[s], comments[s]) for s in set(likes) | set(comments)}


def build_workload(
    rng: random.Random, n_frames: int, n_repos: int = 4, offset: int = 0, account_rate: float = 0.01
) -> Workload:
    """Frames with seqs offset+1..offset+n: mostly fm.plyr writes, some foreign posts, account changes; the
    last repo ("the leaver") is deleted near the end, after liking and commenting on others."""
    dids = [f"did:plc:crash{'bcdefghijk'[i]}{'a' * 18}" for i in range(n_repos)] + [
        f"did:plc:leaver{'b' * 18}"
    ]
    keys = {d: PrivateKey.generate("k256") for d in dids}
    repos = {d: RepoBuilder(d, keys[d]) for d in dids}
    truth: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {d: {} for d in dids}
    # subjects (some gone)
    tracks: list[str] = [f"at://{dids[0]}/fm.plyr.track/{tid_key('never created')}"]
    deactivated: dict[str, int] = {}  # did -> seq at which it is reactivated
    frames: list[tuple[int, bytes]] = []
    events: list[tuple[int, str, list[tuple[str, str | None]] | None, str | None]] = []
    leaver = dids[-1]
    n = 0
    seq = 0
    while seq < n_frames:
        seq += 1
        for did, until in list(deactivated.items()):
            if seq >= until:
                del deactivated[did]
                frames.append((seq + offset, account_frame(seq + offset, did, True)))
                seq += 1
        if seq == n_frames - 5:
            frames.append((seq + offset, account_frame(seq + offset, leaver, False, "deleted")))
            events.append((seq + offset, leaver, None, "deleted"))
            continue
        writers = [
            d for d in dids if d not in deactivated and not (seq > n_frames - 5 and d == leaver)
        ]
        did = rng.choice(writers)
        repo = repos[did]
        roll = rng.random()
        if roll < account_rate and did != leaver and len(deactivated) < 2:
            frames.append(
                (
                    seq + offset,
                    account_frame(
                        seq + offset, did, False, rng.choice(["deactivated", "takendown"])
                    ),
                )
            )
            deactivated[did] = min(seq + rng.randint(5, 200), n_frames - 8)
            continue
        if roll < account_rate + 0.01:
            frames.append((seq + offset, identity_frame(seq + offset, did)))
            continue
        if roll < 0.25:
            n += 1
            repo.put("app.bsky.feed.post", f"3kpost{n}", post_record(f"post {n}"))
        else:
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                n += 1
                collection = rng.choice(COLLECTIONS[:4] * 3 + COLLECTIONS[4:])
                own = [p for p in truth[did] if p.startswith(collection + "/")]
                if own and rng.random() < 0.3:
                    path = rng.choice(own)
                    if rng.random() < 0.5:
                        repo.delete(*path.split("/"))
                        del truth[did][path]
                        continue
                    rkey = path.split("/")[1]
                else:
                    rkey = (
                        "self"
                        if collection == "fm.plyr.actor.profile"
                        else tid_key(f"{collection[8:10]}{n}")  # the lexicons want TID keys
                    )
                record = _record(collection, n, rng, tracks)
                cid = repo.put(collection, rkey, record)
                truth[did][f"{collection}/{rkey}"] = (cid_to_str(cid), record)
                if collection == "fm.plyr.track":
                    tracks.append(f"at://{did}/{collection}/{rkey}")
        result = repo.commit()
        frames.append((seq + offset, result.firehose_frame(seq + offset)))
        plyr_ops = [
            (op.path, cid_to_str(op.cid) if op.cid else None)
            for op in result.ops
            if op.path.startswith("fm.plyr.")
        ]
        if plyr_ops:
            events.append((seq + offset, did, plyr_ops, None))
    for did in deactivated:  # everyone ends active (except the leaver, deleted)
        seq += 1
        frames.append((seq + offset, account_frame(seq + offset, did, True)))
    return Workload(frames, keys, truth, {leaver}, events)


def _record(collection: str, n: int, rng: random.Random, tracks: list[str]) -> dict[str, Any]:
    if collection == "fm.plyr.track":
        return track_record(f"Track {n}")
    if collection == "fm.plyr.like":
        return like_record(rng.choice(tracks))
    if collection == "fm.plyr.comment":
        return comment_record(rng.choice(tracks), f"comment {n}", rng.randrange(0, 300_000))
    if collection == "fm.plyr.list":
        return list_record(rng.sample(tracks, min(len(tracks), rng.randrange(0, 4))), f"List {n}")
    return profile_record(f"bio {n}")


# ---- checks ------------------------------------------------------------------------------------


async def consistent(pool: asyncpg.Pool) -> None:
    """What any committed state must satisfy, whenever the process died. One snapshot: a
    standby may be committing while we look."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        stored = {
            r["subject_uri"]: (r["like_count"], r["comment_count"])
            for r in await conn.fetch(
                "SELECT * FROM track_counts WHERE like_count <> 0 OR comment_count <> 0"
            )
        }
        recount = await conn.fetch(
            """SELECT subject_uri, sum(l)::int AS l, sum(c)::int AS c FROM (
                 SELECT subject_uri, 1 AS l, 0 AS c FROM likes JOIN actors USING (did) WHERE visible
                 UNION ALL SELECT subject_uri, 0, 1 FROM comments JOIN actors USING (did) WHERE visible) x
               GROUP BY subject_uri"""
        )
        negative = await conn.fetchval(
            "SELECT count(*) FROM track_counts WHERE like_count < 0 OR comment_count < 0"
        )
        bad_items = await conn.fetchval(
            "SELECT count(*) FROM lists l WHERE item_count <> (SELECT count(*) FROM list_items i WHERE i.list_uri = l.uri)"
        )
    assert stored == {r["subject_uri"]: (r["l"], r["c"]) for r in recount}, (
        "counts differ from the rows"
    )
    assert negative == 0, "a count went negative"
    assert bad_items == 0, "list items differ from item_count"


async def equals_prefix(pool: asyncpg.Pool, work: Workload, seq: int) -> None:
    """The committed rows are exactly the events up to the committed cursor: nothing behind
    the cursor is missing (lost on a crash), nothing after it is there."""
    got: dict[str, str] = {}
    for table in TABLE.values():
        for r in await pool.fetch(
            f"SELECT uri, cid FROM {table} WHERE did = ANY($1::text[])", list(work.truth)
        ):
            got[r["uri"]] = r["cid"]
    want = work.rows_at(seq)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    stale = sorted(u for u in set(want) & set(got) if want[u] != got[u])
    assert not (missing or extra or stale), (
        f"at cursor {seq}: missing {missing[:3]}, extra {extra[:3]}, stale {stale[:3]}"
    )


async def equals_truth(pool: asyncpg.Pool, work: Workload) -> None:
    expected = work.expected_rows()
    for collection, rows in expected.items():
        got = {
            r["uri"]: r["cid"]
            for r in await pool.fetch(f"SELECT uri, cid FROM {TABLE[collection]}")
        }
        missing = set(rows) - set(got)
        extra = set(got) - set(rows)
        assert not missing and not extra, f"{collection}: {len(missing)} lost, {len(extra)} extra"
        assert got == rows, f"{collection}: stale versions"
    stored = {
        r["subject_uri"]: (r["like_count"], r["comment_count"])
        for r in await pool.fetch(
            "SELECT * FROM track_counts WHERE like_count <> 0 OR comment_count <> 0"
        )
    }
    assert stored == work.expected_counts()
    await consistent(pool)
    actors = {
        r["did"]: r
        for r in await pool.fetch(
            "SELECT did, status, visible, needs_resync, resync_reason FROM actors"
        )
    }
    for did in work.truth:
        if did in work.deleted:
            assert actors[did]["status"] == "deleted" and not actors[did]["visible"]
        else:
            assert (actors[did]["status"], actors[did]["visible"]) == ("active", True), did
        assert not actors[did]["needs_resync"], (
            f"{did} marked for resync: {actors[did]['resync_reason']}"
        )
    # (Inputs of other DIDs, like the fuzz corpus's, may be dead-lettered; ours never.)
    letters = await pool.fetch(
        "SELECT did, reason FROM dead_letters WHERE did = ANY($1::text[])", list(work.truth)
    )
    assert not letters, letters[:3]


# ---- the process -------------------------------------------------------------------------------


@pytest.fixture
async def identity() -> AsyncIterator[FakeIdentityServer]:
    server = FakeIdentityServer()
    await server.start()
    yield server
    await server.stop()


def indexer_env(database_url: str, plc_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "PLYR_PLC_URL": plc_url,
        "PLYR_HANDLE_RESOLVER_URL": plc_url,
        "PLYR_INDEXER_METRICS_PORT": "0",
        "PLYR_INDEXER_BATCH_SIZE": "20",
        "PLYR_INDEXER_BATCH_MS": "30",
        "PLYR_INDEXER_STANDBY_POLL_S": "0.1",
        "PLYR_LOG_FORMAT": "json",
        **extra,
    }


async def start(
    args: list[str], env: dict[str, str], log: Path, prefix: list[str] | None = None
) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *(prefix or PLYR),
            *args,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


async def cursor(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT coalesce(max(seq), 0) FROM cursors")


async def wait_for_cursor(
    pool: asyncpg.Pool, seq: int, proc: asyncio.subprocess.Process, log: Path, within: float
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while await cursor(pool) < seq:
        if proc.returncode is not None:
            raise AssertionError(f"indexer exited {proc.returncode}:\n{tail(log)}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"cursor at {await cursor(pool)}, wanted {seq}:\n{tail(log)}")
        await asyncio.sleep(0.1)


async def wait_for_progress(
    pool: asyncpg.Pool, last: int, end: int, procs: list[asyncio.subprocess.Process], log: Path,
    within: float,
) -> None:  # fmt: skip
    """Until the committed cursor passes `last` (or the stream's `end`): the indexers made
    progress since then. Fails if one exits or none progresses `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while (now := await cursor(pool)) <= last and now < end:
        if any(p.returncode is not None for p in procs):
            raise AssertionError(f"an indexer exited:\n{tail(log)}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no progress past cursor {last} in {within:.0f}s:\n{tail(log)}")
        await asyncio.sleep(0.05)


def register(identity: FakeIdentityServer, work: Workload) -> None:
    for did, key in work.keys.items():
        identity.plc[did] = did_doc(did, key.public_key())


@pytest.mark.parametrize("processes", [1, 2], ids=["alone", "with-standby"])
async def test_sigkill_at_random_points_loses_nothing(
    pool: asyncpg.Pool,
    database_url: str,
    identity: FakeIdentityServer,
    tmp_path: Path,
    processes: int,
) -> None:
    """With a standby (`processes=2`), a random one of the two is killed each time: when it
    was the leader the standby takes the stream lock and resumes from the stored cursor."""
    rng = random.Random(int(os.environ.get("PLYR_CRASH_SEED", "20261124")) + processes)
    work = build_workload(rng, 3000)
    register(identity, work)
    server = FirehoseServer()
    await server.start()
    env = indexer_env(database_url, identity.url)
    log = tmp_path / "indexer.log"

    async def publish() -> None:
        # A live stream (frames keep arriving while we kill), ~250 frames/s but never more than
        # WINDOW frames ahead of the committed cursor: however slowly the indexers start (a
        # loaded CI machine), the stream outlasts the kills.
        for i in range(0, len(work.frames), 25):
            # (polled, not an Event: the cursor moves in another process)
            while work.frames[i][0] - await cursor(pool) > WINDOW:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            for seq, frame in work.frames[i : i + 25]:
                server.publish(seq, frame)
            await asyncio.sleep(0.1)

    publisher = asyncio.create_task(publish())
    kills: list[int] = []
    procs = [await start(["index", "--url", server.url], env, log) for _ in range(processes)]
    try:
        last = 0
        for round_ in range(7 if processes == 1 else 9):
            i = rng.randrange(processes)
            if round_ in (2, 5):
                # Die during start-up, before anything was consumed.
                await asyncio.sleep(rng.uniform(0, 0.5))
            else:
                # Die once the stream has moved the cursor since the last kill -- not after a
                # fixed time: under load the start alone (imports) took longer than the old
                # 0.7-2 s wait, and every kill landed before the indexer consumed a frame --
                # then at a random moment, often mid-batch.
                await wait_for_progress(pool, last, work.last_seq, procs, log, within=90)
                await asyncio.sleep(rng.uniform(0, 0.3))
            assert all(p.returncode is None for p in procs), f"an indexer exited:\n{tail(log)}"
            os.killpg(procs[i].pid, signal.SIGKILL)
            await procs[i].wait()
            now = await cursor(pool)
            assert now >= last, "the cursor went back"
            kills.append(now)
            last = now
            await consistent(pool)
            if processes == 1:  # (a live standby may be committing right now)
                await equals_prefix(pool, work, now)
            procs[i] = await start(["index", "--url", server.url], env, log)
        await publisher
        await wait_for_cursor(pool, work.last_seq, procs[0], log, within=120)
        await asyncio.sleep(0.5)  # background handle lookups of the last batch
    finally:
        publisher.cancel()
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
                await asyncio.wait_for(p.wait(), 20)
        await server.stop()
    assert len(set(kills)) >= 3, (
        f"the kills did not land during the stream: cursors {kills}\n{tail(log)}"
    )
    await equals_truth(pool, work)


# ---- deterministic crash points ------------------------------------------------------------------

@pytest.mark.parametrize(
    "point",
    [
        "before_commit",
        "rows_written_before_commit",
        "after_commit_before_ack",
        "account_before_commit",
        "account_after_commit",
    ],
)
async def test_deterministic_crash_points(
    pool: asyncpg.Pool, database_url: str, identity: FakeIdentityServer, tmp_path: Path, point: str
) -> None:
    rng = random.Random(zlib.crc32(point.encode()))
    work = build_workload(rng, 800, n_repos=3)
    register(identity, work)
    capture = write_capture(tmp_path / "crash.bin", [f for _s, f in work.frames])
    log = tmp_path / "indexer.log"
    args = ["index", "--replay", str(capture)]
    crashes = 0
    for nth in (1, 2, 5, 9, 17):
        env = indexer_env(database_url, identity.url, PLYR_CRASH_AT=f"{point}:{nth}")
        proc = await start(args, env, log)
        code = await asyncio.wait_for(proc.wait(), 120)
        if code == 0:
            break  # the replay finished before the N-th hit
        assert code == 137, tail(log)
        assert f"crashing at {point} #{nth}" in tail(log), tail(log)
        crashes += 1
        await consistent(pool)
        await equals_prefix(pool, work, await cursor(pool))
    assert crashes >= 2, f"{point}: the crash point was hit {crashes} times"
    proc = await start(args, indexer_env(database_url, identity.url), log)
    assert await asyncio.wait_for(proc.wait(), 120) == 0, tail(log)
    assert await cursor(pool) == work.last_seq
    await equals_truth(pool, work)


# ---- the fuzz corpus through the real consumer -----------------------------------------------------


async def test_fuzz_corpus_never_stops_the_consumer(
    pool: asyncpg.Pool, database_url: str, identity: FakeIdentityServer, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Each found input, then valid commits (seqs from 1000 on), in a capture of its own (a
    fresh cursor, so every input meets a fresh decoder): the consumer (signature checks on)
    must end normally with its cursor at the last valid seq, and the index must be exact.
    Logged at INFO, as `plyr index` does: a log call that cannot build its record (issue #11:
    an `#info` frame's name in `extra`) is a way to stop the consumer too."""
    from indexer.service import run_indexer
    from indexer.settings import IndexerSettings
    from indexer.sources import CaptureSource

    work = build_workload(random.Random(7), 40, n_repos=2, offset=1000)
    register(identity, work)
    settings = IndexerSettings(
        source="relay", relay_url="ws://127.0.0.1:1", jetstream_url="ws://127.0.0.1:1", verify=True,
        metrics_port=0, batch_size=10, batch_delay=0.05, standby_poll=0.1,
    )  # fmt: skip
    resolver = local_resolver(identity.url, handle_resolver_url=identity.url, refresh_floor=0)
    caplog.set_level(logging.INFO, logger="plyr")
    failures: list[str] = []
    try:
        for path in corpus_files():
            capture = write_capture(
                tmp_path / f"{path.stem}.bin", [path.read_bytes(), *(f for _s, f in work.frames)]
            )
            source = CaptureSource(capture)
            try:
                await run_indexer(
                    database_url, pool, settings, source, verify=True, resolver=resolver
                )
            except Exception as exc:  # noqa: BLE001 - each is a finding, listed below
                failures.append(f"{path.name}: {exc.__class__.__name__}: {str(exc)[:120]}")
                continue
            seq = await pool.fetchval("SELECT seq FROM cursors WHERE source = $1", source.name)
            if seq != work.last_seq:
                failures.append(f"{path.name}: cursor {seq}, wanted {work.last_seq}")
    finally:
        await resolver.close()
    assert not failures, "\n".join(failures)
    await equals_truth(pool, work)


# ---- the cursor never passes an uncommitted event (in-process, with widened windows) -------------


async def test_cursor_never_passes_an_unwritten_event(
    pool: asyncpg.Pool, database_url: str, identity: FakeIdentityServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Every write the consumer commits (a batch, or an account change) must only hold events
    newer than the cursor already committed: otherwise a crash between the two commits loses
    those events for good. Random delays in verification and writes let the batch timer fire
    in the middle of handling an event, where a race would show."""
    import indexer.consumer as consumer_mod
    from indexer.service import run_indexer
    from indexer.settings import IndexerSettings
    from indexer.sources import CaptureSource
    from indexer.verify import Verifier

    rng = random.Random(11)
    work = build_workload(rng, 600, n_repos=3, account_rate=0.04)
    register(identity, work)
    log: list[tuple[str, int, list[int]]] = []  # (kind, cursor seq, event seqs) in commit order
    real_batch, real_account, real_verify = (
        consumer_mod.apply_batch,
        consumer_mod.apply_account,
        Verifier.commit_ops,
    )

    async def apply_batch(conn: Any, ops: Any, **kw: Any) -> Any:
        await asyncio.sleep(rng.uniform(0, 0.03))
        result = await real_batch(conn, ops, **kw)
        events = [op.seq for op in ops] + [d.seq for d in kw.get("dead_letters", ())]
        log.append(("batch", kw["cursor"].seq, [e for e in events if e is not None]))
        return result

    async def apply_account(conn: Any, change: Any, *, cursor: Any = None) -> Any:
        await asyncio.sleep(rng.uniform(0, 0.03))
        result = await real_account(conn, change, cursor=cursor)
        log.append(("account", cursor.seq, [change.seq]))
        return result

    async def commit_ops(self: Verifier, ev: Any) -> Any:
        await asyncio.sleep(rng.uniform(0, 0.01))
        return await real_verify(self, ev)

    monkeypatch.setattr(consumer_mod, "apply_batch", apply_batch)
    monkeypatch.setattr(consumer_mod, "apply_account", apply_account)
    monkeypatch.setattr(Verifier, "commit_ops", commit_ops)
    settings = IndexerSettings(
        source="relay", relay_url="ws://127.0.0.1:1", jetstream_url="ws://127.0.0.1:1", verify=True,
        metrics_port=0, batch_size=15, batch_delay=0.01, standby_poll=0.1,
    )  # fmt: skip
    resolver = local_resolver(identity.url, handle_resolver_url=identity.url, refresh_floor=0)
    capture = write_capture(tmp_path / "race.bin", [f for _s, f in work.frames])
    try:
        await run_indexer(
            database_url, pool, settings, CaptureSource(capture), verify=True, resolver=resolver
        )
    finally:
        await resolver.close()

    accounts = sum(1 for kind, _c, _e in log if kind == "account")
    assert accounts >= 5, f"only {accounts} account writes: the workload does not exercise them"
    committed = 0
    for i, (kind, cursor_seq, events) in enumerate(log):
        early = [e for e in events if e <= committed]
        assert not early, (
            f"write #{i} ({kind}, cursor {cursor_seq}) holds events {early} that an earlier write's "
            f"cursor {committed} already passed: a crash in between loses them"
        )
        assert all(e <= cursor_seq for e in events), (
            f"write #{i} ({kind}) holds events past its own cursor"
        )
        committed = max(committed, cursor_seq)
    await equals_truth(pool, work)
