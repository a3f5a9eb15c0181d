"""The writer against a reference model (an oracle), on a real Postgres.

Hypothesis builds a random history of repo writes (creates, updates, deletes of every indexed
collection across a few DIDs, with real TID revs, some invalid records) and account events
(deactivate, takedown, reactivate, delete), then delivers it the way a firehose, a replay or a
backfill may: out of order, with duplicates and replays of old commits, cut into random batch
boundaries. The same delivery goes through `apply_batch` / `apply_account` and through
`Oracle`, a plain in-memory simulation of the rules the index promises (docs in indexer/writer/):

- a write applies only when its rev is newer than everything stored for that URI (row or
  tombstone); a delete leaves a tombstone at its rev;
- an invalid record is dead-lettered and changes nothing;
- `#account` inactive hides the actor (rows kept, not counted), active shows it again,
  `deleted` removes its rows (tombstoned at max(row rev, repo rev)) and ignores later writes;
  account events for DIDs the index has never seen are ignored;
- like/comment counts per subject = rows of visible actors pointing at it.

At the end, every table the writer owns is compared with the model, and when the history has
no account events the index must also equal the newest valid write of every URI (the truth,
whatever the delivery order).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.records import COMMENT, LIKE, LIST, PROFILE, TRACK, RecordOp
from indexer.writer import (
    AccountChange,
    CursorUpdate,
    apply_account,
    apply_batch,
    default_lexicons,
    dump_records,
    recount,
)
from protocol.cid import cid_for_cbor, cid_to_str
from protocol.data_model import json_to_dag_cbor
from protocol.syntax import tid_from_micros

BASE_MICROS = 1_767_225_600_000_000
DIDS = (
    "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
    "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb",
    "did:plc:cccccccccccccccccccccccc",
)
# A DID that never writes: likes of its tracks must count all the same.
STRANGER = "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz"
RKEYS = {
    TRACK: ("3ktaaaaaaaaa2", "3ktcaaaaaaaa2"),
    LIKE: ("3klaaaaaaaaa2", "3klcaaaaaaaa2"),
    COMMENT: ("3kcaaaaaaaaa2", "3kccaaaaaaaa2"),
    LIST: ("3kpaaaaaaaaa2",),
    PROFILE: ("self",),
}
COLLECTIONS = tuple(RKEYS)
SUBJECTS = tuple(f"at://{d}/{TRACK}/{RKEYS[TRACK][0]}" for d in DIDS) + (
    f"at://{DIDS[0]}/{TRACK}/{RKEYS[TRACK][1]}",
    f"at://{STRANGER}/{TRACK}/3ktxaaaaaaaa2",
)
SUBJECT_CID = cid_to_str(cid_for_cbor(b"\xa0"))
SOURCE = "oracle"
TABLES = ("tracks", "likes", "comments", "lists", "profiles")
TABLE_OF = {TRACK: "tracks", LIKE: "likes", COMMENT: "comments", LIST: "lists", PROFILE: "profiles"}
# apply_account stores an inactive status of a DID without an actors row (a hidden actor), so
# that records arriving later stay hidden; see
# test_account_status_of_a_not_yet_indexed_actor_is_remembered.
UNKNOWN_ACCOUNT_EVENTS_REMEMBERED = True
ACCOUNT_KINDS = {
    "deactivated": (False, "deactivated"),
    "takendown": (False, "takendown"),
    "inactive-no-status": (False, None),
    "active": (True, None),
    "deleted": (False, "deleted"),
}


def rev_at(n: int) -> str:
    return tid_from_micros(BASE_MICROS + n * 1000)


def iso(n: int) -> str:
    return f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.000Z"


def make_record(collection: str, n: int, subject: int, extra: int) -> dict[str, Any]:
    """A valid record of `collection`; `n` makes every write's content (and CID) unique."""
    created = iso(n)
    if collection == TRACK:
        rec: dict[str, Any] = {
            "$type": TRACK, "title": f"Track {n}", "artist": f"Artist {extra}", "fileType": "mp3",
            "createdAt": created,
        }  # fmt: skip
        if extra % 2:
            rec["album"] = f"Album {extra}"
            rec["duration"] = 60 + extra
        return rec
    if collection == LIKE:
        return {
            "$type": LIKE,
            "subject": {"uri": SUBJECTS[subject], "cid": SUBJECT_CID},
            "createdAt": created,
        }
    if collection == COMMENT:
        return {
            "$type": COMMENT, "subject": {"uri": SUBJECTS[subject], "cid": SUBJECT_CID},
            "text": f"comment {n}", "timestampMs": extra * 1000, "createdAt": created,
        }  # fmt: skip
    if collection == LIST:
        items = [{"subject": {"uri": SUBJECTS[(subject + i) % len(SUBJECTS)], "cid": SUBJECT_CID}}
                 for i in range(extra % 4)]  # fmt: skip
        return {
            "$type": LIST,
            "name": f"List {n}",
            "listType": "playlist",
            "items": items,
            "createdAt": created,
        }
    return {"$type": PROFILE, "bio": f"bio {n}", "createdAt": created}


def make_invalid(collection: str, n: int, subject: int) -> dict[str, Any]:
    """A record the lexicon rejects (a required field missing)."""
    rec = make_record(collection, n, subject, 1)
    del rec["createdAt"]
    return rec


def cid_of(record: dict[str, Any]) -> str:
    return cid_to_str(cid_for_cbor(json_to_dag_cbor(record)))


# ---- the scenario ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    ops: tuple[RecordOp, ...]
    invalid: frozenset[str] = frozenset()  # URIs whose record in this commit is invalid


@dataclass(frozen=True)
class Account:
    did: str
    kind: str


Item = Commit | Account


@dataclass
class Scenario:
    history: list[Item]
    delivery: list[Item]
    cuts: list[bool]  # after each delivered op: close the batch here?
    # Pass `repo_revs` (the newest commit rev per DID in the batch) as the consumer does?
    repo_revs: bool = False

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        lines = ["Scenario("]
        for item in self.delivery:
            if isinstance(item, Account):
                lines.append(f"  account {item.did[-4:]} {item.kind}")
            else:
                for op in item.ops:
                    bad = " INVALID" if op.uri in item.invalid else ""
                    lines.append(
                        f"  {op.action} {op.did[-4:]} {op.collection} {op.rkey} rev={op.rev}{bad}"
                    )
        lines.append(f"  cuts={''.join('|' if c else '.' for c in self.cuts)})")
        return "\n".join(lines)


@st.composite
def scenarios(draw: st.DrawFn, *, accounts: bool = True) -> Scenario:
    history: list[Item] = []
    exists: set[str] = set()  # URIs live in the true repo, to label create vs update
    n = 0
    for _ in range(draw(st.integers(1, 30))):
        did = draw(st.sampled_from(DIDS))
        if accounts and draw(st.integers(0, 9)) == 0:
            history.append(Account(did, draw(st.sampled_from(sorted(ACCOUNT_KINDS)))))
            continue
        n += 1
        rev = rev_at(n)
        ops: list[RecordOp] = []
        invalid: set[str] = set()
        paths: set[tuple[str, str]] = set()
        for _ in range(draw(st.integers(1, 3))):  # a commit may carry several writes
            collection = draw(st.sampled_from(COLLECTIONS))
            rkey = draw(st.sampled_from(RKEYS[collection]))
            if (collection, rkey) in paths:
                continue  # one op per path per commit, as in a real repo
            paths.add((collection, rkey))
            uri = f"at://{did}/{collection}/{rkey}"
            if uri in exists and draw(st.integers(0, 3)) == 0:
                exists.discard(uri)
                ops.append(RecordOp("delete", did, collection, rkey, rev))
                continue
            subject = draw(st.integers(0, len(SUBJECTS) - 1))
            k = n * 10 + len(ops)
            if draw(st.integers(0, 11)) == 0:
                record = make_invalid(collection, k, subject)
                invalid.add(uri)
            else:
                record = make_record(collection, k, subject, draw(st.integers(0, 7)))
            action = "update" if uri in exists else "create"
            exists.add(uri)
            ops.append(RecordOp(action, did, collection, rkey, rev, cid_of(record), record))
        history.append(Commit(tuple(ops), frozenset(invalid)))

    delivery = list(history)
    # Out of order: move some items elsewhere (late deliveries, backfill racing the stream).
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(delivery) - 1))
        item = delivery.pop(i)
        delivery.insert(draw(st.integers(0, len(delivery))), item)
    # Duplicates and replays of old commits (a reconnect from an older cursor, a resync).
    commits = [h for h in history if isinstance(h, Commit)]
    if commits:
        for _ in range(draw(st.integers(0, 8))):
            copy = draw(st.sampled_from(commits))
            delivery.insert(draw(st.integers(0, len(delivery))), copy)
    n_ops = sum(len(i.ops) for i in delivery if isinstance(i, Commit))
    cuts = draw(st.lists(st.booleans(), min_size=n_ops, max_size=n_ops))
    return Scenario(history, delivery, cuts, draw(st.booleans()))


# ---- the reference model -----------------------------------------------------------------------


@dataclass
class ActorModel:
    status: str = "active"
    visible: bool = True
    repo_rev: str | None = None


@dataclass
class Oracle:
    # uri -> (rev, op or None for a deletion): the newest applied write of every URI.
    state: dict[str, tuple[str, RecordOp | None]] = field(default_factory=dict)
    actors: dict[str, ActorModel] = field(default_factory=dict)
    # (uri, cid) of every refused version: the writer keeps one dead letter per version.
    refused: set[tuple[str, str | None]] = field(default_factory=set)
    repo_revs: bool = False  # the writer is told every commit's rev, applied or not

    @property
    def dead_letters(self) -> int:
        return len(self.refused)

    def write(self, op: RecordOp, invalid: bool) -> None:
        actor = self.actors.setdefault(op.did, ActorModel())
        if self.repo_revs and (actor.repo_rev is None or op.rev > actor.repo_rev):
            actor.repo_rev = op.rev
        if invalid:
            self.refused.add((op.uri, op.cid))
        if actor.status == "deleted":
            return
        current = self.state.get(op.uri)
        if current is not None and op.rev <= current[0]:
            return  # stale: older than (or the same as) what is stored
        # The newest version being invalid hides the record exactly like a delete.
        self.state[op.uri] = (op.rev, None if op.action == "delete" or invalid else op)
        if actor.repo_rev is None or op.rev > actor.repo_rev:
            actor.repo_rev = op.rev

    def account(self, did: str, kind: str) -> None:
        actor = self.actors.get(did)
        active, status = ACCOUNT_KINDS[kind]
        if actor is None:
            if active or not UNKNOWN_ACCOUNT_EVENTS_REMEMBERED:
                return  # nothing indexed for this DID, and nothing to hide: not recorded
            actor = self.actors[did] = ActorModel()
        if active:
            actor.status, actor.visible = "active", True
            return
        actor.status, actor.visible = status or "deactivated", False
        if actor.status == "deleted":
            # its dead letters go too (account data erasure, indexer/writer/accounts.py)
            self.refused = {(uri, cid) for uri, cid in self.refused if not uri.startswith(f"at://{did}/")}
            for uri, (rev, op) in list(self.state.items()):
                if op is not None and op.did == did:
                    floor = max(rev, actor.repo_rev or "")
                    self.state[uri] = (floor, None)

    def rows(self, collection: str) -> dict[str, RecordOp]:
        return {
            uri: op
            for uri, (_rev, op) in self.state.items()
            if op is not None and op.collection == collection
        }

    def tombstones(self) -> dict[str, str]:
        return {uri: rev for uri, (rev, op) in self.state.items() if op is None}

    def counts(self) -> dict[str, tuple[int, int]]:
        likes: Counter[str] = Counter()
        comments: Counter[str] = Counter()
        for _rev, op in self.state.values():
            if (
                op is None
                or op.collection not in (LIKE, COMMENT)
                or not self.actors[op.did].visible
            ):
                continue
            subject = op.record["subject"]["uri"]  # type: ignore[index]
            (likes if op.collection == LIKE else comments)[subject] += 1
        return {s: (likes[s], comments[s]) for s in set(likes) | set(comments)}


# ---- running a scenario through the writer -----------------------------------------------------


async def reset(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "TRUNCATE actors, tracks, likes, comments, lists, list_items, profiles, track_counts, "
        "actor_counts, index_totals, mirror_outbox, tombstones, cursors, dead_letters "
        "RESTART IDENTITY CASCADE"
    )


async def counter_state(pool: asyncpg.Pool) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
    """actor_counts without all-zero rows, and the sum of the index_totals slots."""
    actors = {
        r["did"]: tuple(int(v) for v in list(r.values())[1:])
        for r in await pool.fetch(
            "SELECT did, track_count, list_count, like_count, comment_count, track_seconds "
            "FROM actor_counts")
    }
    totals = await pool.fetchrow(
        "SELECT coalesce(sum(tracks), 0), coalesce(sum(artists), 0), coalesce(sum(track_seconds), 0), "
        "coalesce(sum(likes), 0), coalesce(sum(comments), 0) FROM index_totals")
    return {d: c for d, c in actors.items() if any(c)}, tuple(int(v) for v in totals.values())


async def run_writer(pool: asyncpg.Pool, scenario: Scenario) -> int:
    """Deliver the scenario to the writer; returns the last seq written with the cursor."""
    lexicons = default_lexicons()
    seq = 0
    batch: list[RecordOp] = []
    cuts = iter(scenario.cuts)

    async def flush() -> None:
        nonlocal batch
        if batch:
            revs: dict[str, str] = {}
            for op in batch:
                revs[op.did] = max(revs.get(op.did, ""), op.rev)
            async with pool.acquire() as conn:
                await apply_batch(
                    conn, batch, lexicons=lexicons, cursor=CursorUpdate(SOURCE, seq), source=SOURCE,
                    repo_revs=revs if scenario.repo_revs else None,
                )  # fmt: skip
            batch = []

    for item in scenario.delivery:
        if isinstance(item, Account):
            await flush()
            seq += 1
            active, status = ACCOUNT_KINDS[item.kind]
            async with pool.acquire() as conn:
                await apply_account(
                    conn,
                    AccountChange(item.did, active, status, seq),
                    cursor=CursorUpdate(SOURCE, seq),
                )
            continue
        seq += 1
        for op in item.ops:
            batch.append(
                RecordOp(op.action, op.did, op.collection, op.rkey, op.rev, op.cid, op.record, seq)
            )
            if next(cuts):
                await flush()
    await flush()
    return seq


def run_oracle(scenario: Scenario) -> Oracle:
    oracle = Oracle(repo_revs=scenario.repo_revs)
    for item in scenario.delivery:
        if isinstance(item, Account):
            oracle.account(item.did, item.kind)
        else:
            for op in item.ops:
                oracle.write(op, op.uri in item.invalid)
    return oracle


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


async def compare(pool: asyncpg.Pool, oracle: Oracle, last_seq: int) -> None:
    for collection, table in TABLE_OF.items():
        expected = oracle.rows(collection)
        got = {r["uri"]: r for r in await pool.fetch(f"SELECT * FROM {table}")}
        assert set(got) == set(expected), f"{table}: rows differ"
        for uri, op in expected.items():
            row = got[uri]
            assert (row["rev"], row["cid"], _json(row["record"])) == (op.rev, op.cid, op.record), (
                uri
            )
            assert row["did"] == op.did
            rec = op.record or {}
            if collection == TRACK:
                assert (row["title"], row["artist"], row["album"], row["duration_s"]) == (
                    rec["title"], rec["artist"], rec.get("album"), rec.get("duration"),
                )  # fmt: skip
            elif collection in (LIKE, COMMENT):
                assert (row["subject_uri"], row["subject_cid"]) == (
                    rec["subject"]["uri"],
                    rec["subject"]["cid"],
                )
                if collection == COMMENT:
                    assert (row["text"], row["timestamp_ms"]) == (rec["text"], rec["timestampMs"])
            elif collection == LIST:
                assert (row["name"], row["list_type"], row["item_count"]) == (
                    rec["name"], rec["listType"], len(rec["items"]),
                )  # fmt: skip
            elif collection == PROFILE:
                assert row["bio"] == rec["bio"]

    # List items: exactly the items of each stored list, in order.
    items = await pool.fetch(
        "SELECT list_uri, position, subject_uri, subject_cid FROM list_items ORDER BY 1, 2"
    )
    expected_items = [
        (uri, pos, it["subject"]["uri"], it["subject"]["cid"])
        for uri, op in sorted(oracle.rows(LIST).items())
        for pos, it in enumerate(op.record["items"])  # type: ignore[index]
    ]
    assert [tuple(r) for r in items] == expected_items

    # Tombstones: a deleted URI is tombstoned at the deleting rev; a live one has none newer.
    tombs = {r["uri"]: r["rev"] for r in await pool.fetch("SELECT uri, rev FROM tombstones")}
    for uri, rev in oracle.tombstones().items():
        assert tombs.get(uri) == rev, f"tombstone of {uri}"
    live = {uri: rev for uri, (rev, op) in oracle.state.items() if op is not None}
    for uri, rev in tombs.items():
        assert uri in oracle.state, f"tombstone for a URI never written: {uri}"
        if uri in live:
            assert rev < live[uri], f"tombstone of live {uri} is not older than the row"

    # Actors: status, visibility and the newest rev applied.
    actors = {
        r["did"]: r for r in await pool.fetch("SELECT did, status, visible, repo_rev FROM actors")
    }
    assert set(actors) == set(oracle.actors)
    for did, model in oracle.actors.items():
        row = actors[did]
        assert (row["status"], row["visible"], row["repo_rev"]) == (
            model.status,
            model.visible,
            model.repo_rev,
        ), did

    # Counts: the aggregate table equals the model and a COUNT(*) of the rows (zeros may stay).
    stored = {
        r["subject_uri"]: (r["like_count"], r["comment_count"])
        for r in await pool.fetch("SELECT subject_uri, like_count, comment_count FROM track_counts")
    }
    stored_nonzero = {s: c for s, c in stored.items() if c != (0, 0)}
    assert stored_nonzero == oracle.counts()
    from_rows = await pool.fetch(
        """SELECT subject_uri, sum(l)::int AS l, sum(c)::int AS c FROM (
             SELECT subject_uri, 1 AS l, 0 AS c FROM likes JOIN actors USING (did) WHERE visible
             UNION ALL SELECT subject_uri, 0, 1 FROM comments JOIN actors USING (did) WHERE visible) x
           GROUP BY subject_uri"""
    )
    assert {r["subject_uri"]: (r["l"], r["c"]) for r in from_rows} == stored_nonzero
    assert all(c[0] >= 0 and c[1] >= 0 for c in stored.values()), "a count went negative"

    # The other counters (per actor, platform totals): a rebuild from the rows changes nothing.
    kept = await counter_state(pool)
    async with pool.acquire() as conn:
        await recount(conn)
    assert await counter_state(pool) == kept

    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == oracle.dead_letters
    if last_seq:
        assert await pool.fetchval("SELECT seq FROM cursors WHERE source = $1", SOURCE) == last_seq


def truth(history: list[Item]) -> dict[str, RecordOp | None]:
    """The newest write of every URI in the true history (None: deleted, or its newest version
    is invalid, which hides the record like a delete)."""
    newest: dict[str, tuple[RecordOp, bool]] = {}
    for item in history:
        if isinstance(item, Commit):
            for op in item.ops:
                if op.uri not in newest or op.rev > newest[op.uri][0].rev:
                    newest[op.uri] = (op, op.uri in item.invalid)
    return {
        uri: (None if op.action == "delete" or invalid else op)
        for uri, (op, invalid) in newest.items()
    }


# PLYR_ORACLE_EXAMPLES=2000 for a longer search (the default keeps the suite fast).
ORACLE_SETTINGS = settings(
    max_examples=int(os.environ.get("PLYR_ORACLE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    derandomize=False,
)


@ORACLE_SETTINGS
@given(scenario=scenarios())
async def test_writer_matches_oracle(pool: asyncpg.Pool, scenario: Scenario) -> None:
    await reset(pool)
    last_seq = await run_writer(pool, scenario)
    oracle = run_oracle(scenario)
    await compare(pool, oracle, last_seq)


@ORACLE_SETTINGS
@given(scenario=scenarios(accounts=False))
async def test_any_delivery_order_converges_to_the_truth(
    pool: asyncpg.Pool, scenario: Scenario
) -> None:
    """Without account events, every delivery order/duplication/batching ends in the same
    index: the newest valid write of each URI."""
    await reset(pool)
    await run_writer(pool, scenario)
    expected = truth(scenario.history)
    got: dict[str, tuple[str, str]] = {}
    for table in TABLES:
        for r in await pool.fetch(f"SELECT uri, rev, cid FROM {table}"):
            got[r["uri"]] = (r["rev"], r["cid"])
    want = {uri: (op.rev, op.cid) for uri, op in expected.items() if op is not None}
    assert got == want
    # Counts: every live like/comment of the truth counts once (no account events: all visible).
    likes: Counter[str] = Counter()
    comments: Counter[str] = Counter()
    for op in expected.values():
        if op is not None and op.collection in (LIKE, COMMENT):
            (likes if op.collection == LIKE else comments)[op.record["subject"]["uri"]] += 1  # type: ignore[index]
    stored = {
        r["subject_uri"]: (r["like_count"], r["comment_count"])
        for r in await pool.fetch(
            "SELECT * FROM track_counts WHERE like_count <> 0 OR comment_count <> 0"
        )
    }
    assert stored == {s: (likes[s], comments[s]) for s in set(likes) | set(comments)}


# ---- hand-picked cases the random search found or that pin a rule down ---------------------------


async def _apply(pool: asyncpg.Pool, ops: list[RecordOp]) -> None:
    async with pool.acquire() as conn:
        await apply_batch(conn, ops, lexicons=default_lexicons(), source=SOURCE)


async def test_like_survives_actor_hide_show_with_exact_counts(pool: asyncpg.Pool) -> None:
    did = DIDS[0]
    like = make_record(LIKE, 1, 4, 0)
    await _apply(
        pool, [RecordOp("create", did, LIKE, RKEYS[LIKE][0], rev_at(1), cid_of(like), like)]
    )
    for kind in ("deactivated", "takendown", "active", "deactivated", "active", "active"):
        active, status = ACCOUNT_KINDS[kind]
        async with pool.acquire() as conn:
            await apply_account(conn, AccountChange(did, active, status))
    assert (
        await pool.fetchval(
            "SELECT like_count FROM track_counts WHERE subject_uri = $1", SUBJECTS[4]
        )
        == 1
    )


async def test_nul_in_a_record_string_is_indexed_whole_not_a_failed_batch(
    pool: asyncpg.Pool,
) -> None:
    """Postgres text/jsonb cannot hold U+0000, which DAG-CBOR strings and the lexicons allow.
    Such a record is indexed whole (exactly, beside the jsonb: docs/invariants.md 13); if it made
    the whole transaction fail, the consumer would restart from the cursor onto the same batch
    forever (a poison pill: one record stops the indexer for the whole network)."""
    did = DIDS[0]
    bad = make_record(TRACK, 1, 0, 0) | {"title": "nul\x00here"}
    good = make_record(TRACK, 2, 0, 0)
    ops = [
        RecordOp("create", did, TRACK, RKEYS[TRACK][0], rev_at(1), cid_of(bad), bad),
        RecordOp("create", did, TRACK, RKEYS[TRACK][1], rev_at(1), cid_of(good), good),
    ]
    async with pool.acquire() as conn:
        await apply_batch(
            conn, ops, lexicons=default_lexicons(), cursor=CursorUpdate(SOURCE, 7), source=SOURCE
        )
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 2
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    dump = {d["uri"]: d["value"] async for d in dump_records(pool, TRACK)}
    assert dump[f"at://{did}/{TRACK}/{RKEYS[TRACK][0]}"] == bad
    assert await pool.fetchval("SELECT seq FROM cursors WHERE source = $1", SOURCE) == 7


async def test_nul_in_a_rev_is_dead_lettered_not_a_failed_batch(pool: asyncpg.Pool) -> None:
    """The commit rev is the repo's own string (not checked to be a TID): U+0000 in it must not
    fail the batch either."""
    did = DIDS[0]
    rec = make_record(TRACK, 1, 0, 0)
    good = make_record(TRACK, 2, 0, 0)
    ops = [
        RecordOp("create", did, TRACK, RKEYS[TRACK][0], rev_at(1) + "\x00", cid_of(rec), rec),
        RecordOp("create", DIDS[1], TRACK, RKEYS[TRACK][1], rev_at(1), cid_of(good), good),
    ]
    async with pool.acquire() as conn:
        await apply_batch(
            conn, ops, lexicons=default_lexicons(), cursor=CursorUpdate(SOURCE, 7), source=SOURCE
        )
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 1
    assert await pool.fetchval("SELECT seq FROM cursors WHERE source = $1", SOURCE) == 7


async def test_deeply_nested_record_is_dead_lettered_not_a_crash(pool: asyncpg.Pool) -> None:
    """A record nested deeper than orjson can encode (255 levels; Jetstream's JSON decoder accepts
    1024, and unknown fields are open in the lexicon) used to make the jsonb codec fail inside the
    transaction (asyncpg DataError): the whole batch failed and the live indexer restarted onto
    the same batch forever. Validation refuses nesting past protocol.data_model.MAX_NESTING, so
    it is dead-lettered (without the record, which cannot be stored)."""
    did = DIDS[0]
    deep: list[Any] = []
    for _ in range(300):
        deep = [deep]
    rec = make_record(TRACK, 1, 0, 0) | {"extra": deep}
    good = make_record(TRACK, 2, 0, 0)
    ops = [
        RecordOp("create", did, TRACK, RKEYS[TRACK][0], rev_at(1), "bafyreideep", rec),
        RecordOp("create", did, TRACK, RKEYS[TRACK][1], rev_at(1), cid_of(good), good),
    ]
    async with pool.acquire() as conn:
        await apply_batch(
            conn, ops, lexicons=default_lexicons(), cursor=CursorUpdate(SOURCE, 7), source=SOURCE
        )
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 1
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 1


@settings(
    max_examples=int(os.environ.get("PLYR_ORACLE_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(scenario=scenarios(accounts=False), data=st.data())
async def test_concurrent_writers_converge_to_the_truth(
    pool: asyncpg.Pool, scenario: Scenario, data: st.DataObject
) -> None:
    """The live indexer and a backfill write the same repos at the same time: each stream's
    batches go through their own connection, interleaved by the event loop and Postgres. The
    per-DID locks must make the result the same as any serial order: the truth, counts exact."""
    await reset(pool)
    lexicons = default_lexicons()
    n_streams = data.draw(st.integers(2, 3))
    streams: list[list[list[RecordOp]]] = [[] for _ in range(n_streams)]
    for item in scenario.delivery:
        assert isinstance(item, Commit)
        stream = streams[data.draw(st.integers(0, n_streams - 1))]
        if not stream or data.draw(st.booleans()):
            stream.append([])
        stream[-1].extend(item.ops)

    async def run(batches: list[list[RecordOp]]) -> None:
        async with pool.acquire() as conn:
            for batch in batches:
                await apply_batch(conn, batch, lexicons=lexicons, source=SOURCE)

    await asyncio.gather(*(run(s) for s in streams))
    expected = truth(scenario.history)
    got = {}
    for table in TABLES:
        for r in await pool.fetch(f"SELECT uri, rev, cid FROM {table}"):
            got[r["uri"]] = (r["rev"], r["cid"])
    assert got == {uri: (op.rev, op.cid) for uri, op in expected.items() if op is not None}
    likes: Counter[str] = Counter()
    comments: Counter[str] = Counter()
    for op in expected.values():
        if op is not None and op.collection in (LIKE, COMMENT):
            (likes if op.collection == LIKE else comments)[op.record["subject"]["uri"]] += 1  # type: ignore[index]
    stored = {
        r["subject_uri"]: (r["like_count"], r["comment_count"])
        for r in await pool.fetch(
            "SELECT * FROM track_counts WHERE like_count <> 0 OR comment_count <> 0"
        )
    }
    assert stored == {s: (likes[s], comments[s]) for s in set(likes) | set(comments)}


class _RejectingLexicons:
    """The lexicons as they were before a fix: records of `broken` collections are rejected."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken

    def validate_record(self, nsid: str, value: Any, rkey: str | None = None) -> list[str]:
        if nsid in self.broken:
            return [f"{nsid}: rejected by the buggy validator"]
        return default_lexicons().validate_record(nsid, value, rkey)


async def test_dead_letter_replay_obeys_the_rev_rules(pool: asyncpg.Pool) -> None:
    """Dead letters replayed after a fix are late writes: a newer write or delete still wins,
    and an actor's hidden state still keeps their likes out of the counts."""
    from indexer.deadletters import replay_dead_letters

    a, b = DIDS[0], DIDS[1]
    buggy = _RejectingLexicons({TRACK, LIKE})
    t0 = make_record(TRACK, 1, 0, 0)
    t1 = make_record(TRACK, 2, 0, 0)
    t1_new = make_record(TRACK, 4, 0, 1)
    like_b = make_record(LIKE, 5, 4, 0)

    def op(
        action: str, did: str, coll: str, rkey: str, n: int, rec: dict[str, Any] | None
    ) -> RecordOp:
        return RecordOp(action, did, coll, rkey, rev_at(n), cid_of(rec) if rec else None, rec, n)

    async with pool.acquire() as conn:
        # Dead-lettered by the buggy validator: a create later deleted, a create later
        # overtaken by a newer (valid) update, and a like of an actor hidden afterwards.
        await apply_batch(
            conn,
            [
                op("create", a, TRACK, RKEYS[TRACK][0], 1, t0),
                op("create", a, TRACK, RKEYS[TRACK][1], 2, t1),
                op("create", b, LIKE, RKEYS[LIKE][0], 5, like_b),
            ],
            lexicons=buggy,
            source=SOURCE,
        )
        await apply_batch(
            conn,
            [
                op("delete", a, TRACK, RKEYS[TRACK][0], 3, None),
                op("update", a, TRACK, RKEYS[TRACK][1], 4, t1_new),
            ],
            lexicons=default_lexicons(),
            source=SOURCE,
        )
        await apply_account(conn, AccountChange(b, False, "deactivated"))
    assert await pool.fetchval("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL") == 3

    summary = await replay_dead_letters(pool, verify=False, lexicons=default_lexicons())
    assert summary["applied"] == 3, summary
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM tracks WHERE uri = $1", f"at://{a}/{TRACK}/{RKEYS[TRACK][0]}"
        )
        == 0
    )
    assert await pool.fetchval(
        "SELECT rev FROM tracks WHERE uri = $1", f"at://{a}/{TRACK}/{RKEYS[TRACK][1]}"
    ) == rev_at(4)
    assert await pool.fetchval("SELECT count(*) FROM likes") == 1  # stored, the actor is hidden...
    assert (
        await pool.fetchval("SELECT coalesce(sum(like_count), 0) FROM track_counts") == 0
    )  # ...not counted
    async with pool.acquire() as conn:
        await apply_account(conn, AccountChange(b, True, None))
    assert (
        await pool.fetchval(
            "SELECT like_count FROM track_counts WHERE subject_uri = $1", SUBJECTS[4]
        )
        == 1
    )
    # Nothing replays twice.
    assert (await replay_dead_letters(pool, verify=False, lexicons=default_lexicons()))[
        "applied"
    ] == 0


async def test_account_status_of_a_not_yet_indexed_actor_is_remembered(pool: asyncpg.Pool) -> None:
    """`#account` active=false for an actor whose records have not reached the index yet (a
    backfill that fetched the repo just before the deactivation writes after it) must still hide
    them when they arrive: the status has to be stored even for a DID not seen before."""
    did = DIDS[2]
    async with pool.acquire() as conn:
        await apply_account(conn, AccountChange(did, False, "deactivated"))
    like = make_record(LIKE, 1, 4, 0)
    await _apply(
        pool, [RecordOp("create", did, LIKE, RKEYS[LIKE][0], rev_at(1), cid_of(like), like)]
    )
    assert await pool.fetchval("SELECT visible FROM actors WHERE did = $1", did) is False
    assert await pool.fetchval("SELECT coalesce(sum(like_count), 0) FROM track_counts") == 0
