"""The indexer against a real PDS (`@atproto/pds` + PLC on loopback), signatures checked.

`plyr index --url ws://.../xrpc/com.atproto.sync.subscribeRepos` runs as a subprocess with
PLYR_PLC_URL and PLYR_HANDLE_RESOLVER_URL pointing at the local PLC and PDS. Users write,
update and delete every fm.plyr collection through the PDS's XRPC; accounts are deactivated
and deleted; a handle changes. The index (`plyr records dump`) must then equal what the PDS's
`com.atproto.repo.listRecords` returns for every visible account, handles must be the new ones,
a deactivated actor hidden (rows kept), a deleted actor's rows gone, and counts exact.

Then the crash test: the indexer is SIGKILLed at random moments while users stream a few
thousand writes in applyWrites batches, and restarted each time: at the end nothing is lost,
nothing duplicated, counts exact.

The PDS's firehose is shared by the test session: each test uses its own accounts, its own
database, and compares only its own DIDs.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from indexer.writer import dump_records
from protocol.syntax import tid_from_micros

from .pds_client import Account, PdsClient, XrpcError, rkey_of, write_op
from .pds_network import PdsNetwork, new_account

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BASE_MICROS = 1_767_225_600_000_000  # 2026-01-01: record keys are TIDs (the lexicons say "key": "tid")
COLLECTIONS = (
    "fm.plyr.track",
    "fm.plyr.like",
    "fm.plyr.comment",
    "fm.plyr.list",
    "fm.plyr.actor.profile",
)
TABLES = ("tracks", "likes", "comments", "lists", "profiles")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def track(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "artist": "E2E",
        "fileType": "mp3",
        "audioUrl": "https://cdn.example.com/a.mp3",
        "createdAt": now(),
    }


def strong_ref(uri: str, cid: str) -> dict[str, str]:
    return {"uri": uri, "cid": cid}


def like(uri: str, cid: str) -> dict[str, Any]:
    return {"subject": strong_ref(uri, cid), "createdAt": now()}


def comment(uri: str, cid: str, text: str, ts: int = 1000) -> dict[str, Any]:
    return {"subject": strong_ref(uri, cid), "text": text, "timestampMs": ts, "createdAt": now()}


def playlist(name: str, items: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "name": name,
        "listType": "playlist",
        "items": [{"subject": strong_ref(u, c)} for u, c in items],
        "createdAt": now(),
    }


def profile(bio: str) -> dict[str, Any]:
    return {"bio": bio, "createdAt": now()}


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


# ---- the indexer process -------------------------------------------------------------------------


class Indexer:
    """`plyr index` against the PDS firehose, as a subprocess we can kill."""

    def __init__(self, net: PdsNetwork, database_url: str, log: Path) -> None:
        self.env = {
            **os.environ,
            **net.identity_env(),
            "DATABASE_URL": database_url,
            "PLYR_INDEXER_METRICS_PORT": "0",
            "PLYR_INDEXER_BATCH_SIZE": "50",
            "PLYR_INDEXER_BATCH_MS": "50",
            "PLYR_INDEXER_STANDBY_POLL_S": "0.1",
            "PLYR_LOG_FORMAT": "json",
        }
        self.url = net.firehose_url
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *extra: str) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "plyr", "index", "--url", self.url, *extra,
                cwd=ROOT, env=self.env, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                await self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def connections(self) -> int:
        """How many times the indexer processes logged a firehose connection so far."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count('"msg":"connected"')

    async def restart_and_wait_connected(self, limit_s: float = 60) -> None:
        """Start again and return once connected, so that a machine slow to start Python (a
        loaded CI box) cannot make every kill land before the stream is even reached."""
        before = self.connections()
        await self.start()
        deadline = asyncio.get_running_loop().time() + limit_s
        while self.connections() <= before:
            assert self.alive(), self.tail()
            assert asyncio.get_running_loop().time() < deadline, "indexer did not reconnect"
            await asyncio.sleep(0.05)

    async def dump(self) -> list[dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "plyr", "records", "dump", cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()[-2000:]
        return [orjson.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
async def indexer(
    pds_network: PdsNetwork, database_url: str, tmp_path: Path
) -> AsyncIterator[Indexer]:
    ix = Indexer(pds_network, database_url, tmp_path / "indexer.log")
    yield ix
    await ix.kill()


# ---- truth from the PDS --------------------------------------------------------------------------


async def pds_records(pds: PdsClient, accounts: list[Account]) -> dict[str, tuple[str, Any]]:
    """uri -> (cid, value) of every fm.plyr record of these accounts, from listRecords."""
    out: dict[str, tuple[str, Any]] = {}
    for account in accounts:
        for collection in COLLECTIONS:
            for ref in await pds.list_records(account.did, collection):
                out[ref.uri] = (ref.cid, ref.value)
    return out


def dumped(rows: list[dict[str, Any]], dids: set[str]) -> dict[str, tuple[str, Any]]:
    out: dict[str, tuple[str, Any]] = {}
    for row in rows:
        did = row["uri"].split("/")[2]
        if did in dids:
            assert row["uri"] not in out, f"{row['uri']} dumped twice"
            out[row["uri"]] = (row["cid"], row["value"])
    return out


def expected_counts(records: dict[str, tuple[str, Any]]) -> dict[str, tuple[int, int]]:
    likes: Counter[str] = Counter()
    comments: Counter[str] = Counter()
    for uri, (_cid, value) in records.items():
        if "/fm.plyr.like/" in uri:
            likes[value["subject"]["uri"]] += 1
        elif "/fm.plyr.comment/" in uri:
            comments[value["subject"]["uri"]] += 1
    return {s: (likes[s], comments[s]) for s in set(likes) | set(comments)}


async def stored_counts(pool: asyncpg.Pool, subjects: set[str]) -> dict[str, tuple[int, int]]:
    rows = await pool.fetch(
        "SELECT subject_uri, like_count, comment_count FROM track_counts WHERE subject_uri = ANY($1::text[])",
        sorted(subjects),
    )
    return {
        r["subject_uri"]: (r["like_count"], r["comment_count"])
        for r in rows
        if (r["like_count"], r["comment_count"]) != (0, 0)
    }


async def caught_up(pool: asyncpg.Pool, pds: PdsClient, accounts: list[Account]) -> bool:
    """The index has applied every account's latest commit (its repo_rev is the PDS's head)."""
    for account in accounts:
        head = (await pds.get_latest_commit(account.did))["rev"]
        stored = await pool.fetchval("SELECT repo_rev FROM actors WHERE did = $1", account.did)
        if stored is None or stored < head:
            return False
    return True


# ---- the tests -------------------------------------------------------------------------------------


async def test_index_equals_the_pds(
    pds: PdsClient, pds_network: PdsNetwork, indexer: Indexer, pool: asyncpg.Pool
) -> None:
    alice = await new_account(pds, pds_network, "alice")
    bob = await new_account(pds, pds_network, "bob")
    carol = await new_account(pds, pds_network, "carol")
    dave = await new_account(pds, pds_network, "dave")
    erin = await new_account(pds, pds_network, "erin")
    everyone = [alice, bob, carol, dave, erin]
    await indexer.start("--cursor", "0")

    # Every collection: create, update, delete.
    t1 = await pds.create_record(alice, "fm.plyr.track", track("One"))
    t2 = await pds.create_record(alice, "fm.plyr.track", track("Two"))
    t3 = await pds.create_record(alice, "fm.plyr.track", track("Three"))
    # A blob ref in the record: the dump must give back the same JSON form ($link) as the PDS.
    blob = await pds.upload_blob(alice, b"ID3" + bytes(range(256)) * 8, "audio/mpeg")
    await pds.create_record(
        alice, "fm.plyr.track", track("With blob") | {"audioBlob": blob, "duration": 215}
    )
    t1 = await pds.put_record(alice, "fm.plyr.track", rkey_of(t1[0]), track("One (remastered)"))
    await pds.delete_record(alice, "fm.plyr.track", rkey_of(t3[0]))
    await pds.put_record(alice, "fm.plyr.actor.profile", "self", profile("hello"))
    await pds.put_record(alice, "fm.plyr.actor.profile", "self", profile("hello again"))
    mix = await pds.create_record(alice, "fm.plyr.list", playlist("Mix", [t1, t2]))
    await pds.put_record(alice, "fm.plyr.list", rkey_of(mix[0]), playlist("Mix 2", [t2, t1, t2]))
    gone_list = await pds.create_record(alice, "fm.plyr.list", playlist("Gone", [t1]))
    await pds.delete_record(alice, "fm.plyr.list", rkey_of(gone_list[0]))
    await pds.create_record(bob, "fm.plyr.like", like(*t1))
    l2 = await pds.create_record(bob, "fm.plyr.like", like(*t2))
    await pds.delete_record(bob, "fm.plyr.like", rkey_of(l2[0]))  # an unlike
    c1 = await pds.create_record(bob, "fm.plyr.comment", comment(*t1, "first!"))
    await pds.put_record(
        bob, "fm.plyr.comment", rkey_of(c1[0]), comment(*t1, "first! (edited)", 2000)
    )
    c2 = await pds.create_record(bob, "fm.plyr.comment", comment(*t2, "gone soon"))
    await pds.delete_record(bob, "fm.plyr.comment", rkey_of(c2[0]))
    await pds.put_record(bob, "fm.plyr.actor.profile", "self", profile("bob"))
    await pds.delete_record(bob, "fm.plyr.actor.profile", "self")
    # Carol and Dave like and comment too, then leave (counts must drop), and Dave's like of a
    # track that is deleted afterwards must not resurrect anything.
    await pds.create_record(carol, "fm.plyr.like", like(*t1))
    await pds.create_record(carol, "fm.plyr.track", track("Carol's"))
    await pds.create_record(dave, "fm.plyr.like", like(*t2))
    await pds.create_record(dave, "fm.plyr.comment", comment(*t1, "dave was here"))
    await pds.create_record(dave, "fm.plyr.track", track("Dave's"))
    # A write through applyWrites: several ops in one commit.
    await pds.apply_writes(
        erin,
        [
            write_op("create", "fm.plyr.track", rkey=tid_from_micros(BASE_MICROS + 1),
                     value=track("Erin 1")),
            write_op("create", "fm.plyr.like", value=like(*t1)),
            write_op("create", "fm.plyr.comment", value=comment(*t2, "hi from erin")),
        ],
    )
    await eventually(lambda: caught_up(pool, pds, everyone), "the indexer to catch up", 90)
    assert await pool.fetchval("SELECT count(*) FROM likes WHERE did = $1", dave.did) == 1

    await pds.deactivate_account(carol)
    await pds.delete_account(dave)
    new_handle = pds_network.unique_handle("erin2")
    await pds.update_handle(erin, new_handle)

    async def accounts_applied() -> bool:
        rows = {
            r["did"]: r for r in await pool.fetch("SELECT did, status, visible, handle FROM actors")
        }
        return (
            rows[carol.did]["visible"] is False
            and rows[dave.did]["status"] == "deleted"
            and rows[erin.did]["handle"] == new_handle
        )

    await eventually(accounts_applied, "deactivation, deletion and the handle change", 60)
    assert indexer.alive(), indexer.tail()

    # The index equals listRecords for every visible account.
    visible = [alice, bob, erin]
    truth = await pds_records(pds, visible)
    assert len(truth) == 10  # alice: 3 tracks, profile, list; bob: like, comment; erin: 3
    dump = dumped(await indexer.dump(), {a.did for a in everyone})
    assert dump == truth
    blob_row = await pool.fetchrow(
        "SELECT audio_blob_cid, duration_s FROM tracks WHERE did = $1 AND title = 'With blob'",
        alice.did,
    )
    assert tuple(blob_row) == (blob["ref"]["$link"], 215)
    # Handles: verified both ways, the new one for Erin.
    handles = {r["did"]: r["handle"] for r in await pool.fetch("SELECT did, handle FROM actors")}
    assert handles[alice.did] == alice.handle and handles[erin.did] == new_handle
    # Carol: hidden, rows kept; listRecords refuses her repo.
    with pytest.raises(XrpcError):
        await pds.list_records(carol.did, "fm.plyr.track")
    assert await pool.fetchval("SELECT count(*) FROM tracks WHERE did = $1", carol.did) == 1
    # Dave: every row gone (tombstoned), in every table.
    for table in TABLES:
        assert await pool.fetchval(f"SELECT count(*) FROM {table} WHERE did = $1", dave.did) == 0, (
            table
        )
    assert await pool.fetchval("SELECT count(*) FROM tombstones WHERE did = $1", dave.did) == 3
    # Counts: only visible likers/commenters.
    subjects = {t1[0], t2[0], t3[0]}
    assert await stored_counts(pool, subjects) == {
        s: c for s, c in expected_counts(truth).items() if s in subjects
    }
    assert await stored_counts(pool, {t1[0]}) == {t1[0]: (2, 1)}  # bob + erin; bob's comment
    # Nothing of ours was dead-lettered.
    dids = [a.did for a in everyone]
    assert (
        await pool.fetchval("SELECT count(*) FROM dead_letters WHERE did = ANY($1::text[])", dids)
        == 0
    )

    # Carol comes back: shown again, her like counts again.
    await pds.activate_account(carol)

    async def carol_back() -> bool:
        return bool(await pool.fetchval("SELECT visible FROM actors WHERE did = $1", carol.did))

    await eventually(carol_back, "reactivation", 60)
    await eventually(
        lambda: _eq(stored_counts(pool, {t1[0]}), {t1[0]: (3, 1)}),
        "carol's like to count again",
        30,
    )
    truth = await pds_records(pds, [alice, bob, carol, erin])
    assert dumped(await indexer.dump(), {a.did for a in everyone}) == truth


async def _eq(value: Awaitable[Any], expected: Any) -> bool:
    return (await value) == expected


async def committed_state_is_consistent(pool: asyncpg.Pool) -> None:
    """Whenever the indexer dies, the committed counts equal a recount of the committed rows."""
    mismatched = await pool.fetch(
        """WITH c AS (
             SELECT subject_uri, sum(l)::bigint AS l, sum(c)::bigint AS c FROM (
               SELECT subject_uri, 1 AS l, 0 AS c FROM likes JOIN actors USING (did) WHERE visible
               UNION ALL SELECT subject_uri, 0, 1 FROM comments JOIN actors USING (did) WHERE visible) x
             GROUP BY subject_uri)
           SELECT coalesce(t.subject_uri, c.subject_uri) AS s FROM track_counts t
           FULL JOIN c ON c.subject_uri = t.subject_uri
           WHERE coalesce(t.like_count, 0) <> coalesce(c.l, 0) OR coalesce(t.comment_count, 0) <> coalesce(c.c, 0)"""
    )
    assert not mismatched, f"counts differ from the rows for {[r['s'] for r in mismatched[:3]]}"


async def test_sigkill_during_a_stream_of_writes(
    pds: PdsClient, pds_network: PdsNetwork, indexer: Indexer, pool: asyncpg.Pool
) -> None:
    rng = random.Random(int(os.environ.get("PLYR_E2E_CRASH_SEED", "424242")))
    users = [await new_account(pds, pds_network, f"crash{i}") for i in range(3)]
    await indexer.start("--cursor", "0")
    tracks: list[tuple[str, str]] = []
    live: dict[str, list[str]] = {
        u.did: [] for u in users
    }  # rkeys of likes/comments/tracks per user
    writes_done = 0

    async def stream() -> None:
        nonlocal writes_done
        for round_no in range(50):
            for user in users:
                writes: list[dict[str, Any]] = []
                for i in range(rng.randint(15, 30)):  # small commits: many seqs to die between
                    roll = rng.random()
                    # A TID key (the lexicons say "key": "tid"), unique per write.
                    rkey = tid_from_micros(
                        BASE_MICROS + round_no * 10**9 + i * 10**6 + rng.randrange(10**6)
                    )
                    if roll < 0.25 or not tracks:
                        writes.append(
                            write_op("create", "fm.plyr.track", rkey=rkey, value=track(f"T {rkey}"))
                        )
                    elif roll < 0.6:
                        writes.append(
                            write_op(
                                "create", "fm.plyr.like", rkey=rkey, value=like(*rng.choice(tracks))
                            )
                        )
                    elif roll < 0.8:
                        writes.append(
                            write_op(
                                "create",
                                "fm.plyr.comment",
                                rkey=rkey,
                                value=comment(*rng.choice(tracks), f"c {rkey}"),
                            )
                        )
                    elif roll < 0.85:
                        writes.append(
                            write_op(
                                "create",
                                "fm.plyr.list",
                                rkey=rkey,
                                value=playlist(rkey, rng.sample(tracks, min(3, len(tracks)))),
                            )
                        )
                    else:
                        continue
                    live[user.did].append(writes[-1]["collection"] + "/" + rkey)
                # Updates and deletes of earlier records, in the same commit.
                earlier = [
                    p
                    for p in live[user.did]
                    if p.split("/")[1] not in {w.get("rkey") for w in writes}
                ]
                for path in rng.sample(earlier, min(len(earlier), rng.randint(0, 5))):
                    collection, rkey = path.split("/")
                    if rng.random() < 0.6:
                        writes.append(write_op("delete", collection, rkey=rkey))
                        live[user.did].remove(path)
                    elif collection == "fm.plyr.comment":
                        writes.append(
                            write_op(
                                "update",
                                collection,
                                rkey=rkey,
                                value=comment(*rng.choice(tracks), "edited"),
                            )
                        )
                    elif collection == "fm.plyr.like":
                        writes.append(
                            write_op(
                                "update", collection, rkey=rkey, value=like(*rng.choice(tracks))
                            )
                        )
                results = await pds.apply_writes(user, writes)
                for w, r in zip(writes, results, strict=True):
                    if w["$type"].endswith("#create") and w["collection"] == "fm.plyr.track":
                        tracks.append((r["uri"], r["cid"]))
                writes_done += len(writes)

    # `--cursor 0` only counts until the first commit: a process that dies before it has
    # stored a cursor restarts from the live tip (see the report). Let it store one first.
    await eventually(
        lambda: pool.fetchval("SELECT count(*) FROM cursors"), "the first cursor commit", 60
    )
    writer = asyncio.create_task(stream())
    kill_cursors: list[int] = []
    try:
        while not writer.done():
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            assert indexer.alive(), indexer.tail()
            await indexer.kill()
            kill_cursors.append(await pool.fetchval("SELECT coalesce(max(seq), 0) FROM cursors"))
            await committed_state_is_consistent(pool)
            await indexer.restart_and_wait_connected()  # resumes from the stored cursor
        await writer
    finally:
        writer.cancel()
    assert writes_done >= 2000, writes_done
    assert len(set(kill_cursors)) >= 3, (
        f"the kills did not land during the stream: cursors {kill_cursors}\n{indexer.tail()}"
    )
    assert kill_cursors == sorted(kill_cursors), f"the cursor went back: {kill_cursors}"
    await eventually(lambda: caught_up(pool, pds, users), "the indexer to catch up", 180)
    assert indexer.alive(), indexer.tail()

    truth = await pds_records(pds, users)
    dump = dumped(await indexer.dump(), {u.did for u in users})
    missing = set(truth) - set(dump)
    extra = set(dump) - set(truth)
    dids = [u.did for u in users]
    letters = await pool.fetch(
        "SELECT seq, did, reason FROM dead_letters WHERE did = ANY($1::text[]) ORDER BY id", dids
    )
    assert not missing and not extra, (
        f"{len(missing)} lost, {len(extra)} extra (of {len(truth)}); "
        f"dead letters: {[tuple(r) for r in letters[:5]]}; kills at cursors {kill_cursors}"
    )
    assert dump == truth
    subjects = {uri for uri, _cid in tracks}
    assert await stored_counts(pool, subjects) == {
        s: c for s, c in expected_counts(truth).items() if s in subjects
    }
    dids = [u.did for u in users]
    assert (
        await pool.fetchval("SELECT count(*) FROM dead_letters WHERE did = ANY($1::text[])", dids)
        == 0
    )
    resync = await pool.fetch(
        "SELECT did, resync_reason FROM actors WHERE needs_resync AND did = ANY($1::text[])", dids
    )
    assert not resync, resync


async def test_a_record_with_nul_is_indexed_whole(
    pds: PdsClient, pds_network: PdsNetwork, indexer: Indexer, pool: asyncpg.Pool
) -> None:
    """Any user can publish a string holding U+0000 (valid in DAG-CBOR and in our lexicons;
    Postgres text and jsonb cannot store it). The record is indexed whole (kept exactly beside
    the jsonb, docs/invariants.md 13) and the stream goes on."""
    mallory = await new_account(pds, pds_network, "mallory")
    bob = await new_account(pds, pds_network, "nulbob")
    await indexer.start("--cursor", "0")
    nul_track = await pds.create_record(mallory, "fm.plyr.track", track("nul \u0000 inside"))
    bob_track = await pds.create_record(bob, "fm.plyr.track", track("after the nul"))

    async def bob_indexed() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM tracks WHERE uri = $1", bob_track[0]))

    await eventually(bob_indexed, "a record published after the NUL one to be indexed", 30)
    letters = await pool.fetch("SELECT reason FROM dead_letters WHERE did = $1", mallory.did)
    assert not letters, letters
    dump = {d["uri"]: d["value"] async for d in dump_records(pool, "fm.plyr.track")}
    assert dump[nul_track[0]]["title"] == "nul \u0000 inside"
    title = await pool.fetchval("SELECT title FROM tracks WHERE uri = $1", nul_track[0])
    assert title == "nul \ufffd inside"  # the column is a derived view; text cannot hold NUL
