"""The writer's rules on a real Postgres: rev order, tombstones, counts, accounts, cursor."""

from __future__ import annotations

import random

import asyncpg
import pytest

from indexer import writer
from indexer.records import RecordOp
from indexer.writer import (
    AccountChange,
    CursorConflict,
    CursorUpdate,
    DeadLetter,
    apply_account,
    apply_batch,
    default_lexicons,
)
from indexer.writer import (
    apply as writer_apply,
)
from protocol.syntax import tid_from_micros
from tests.support.frames import (
    STRONG_CID,
    comment_record,
    like_record,
    list_record,
    profile_record,
    track_record,
)
from tests.support.rkeys import tid_key

ALICE = "did:plc:alice"
BOB = "did:plc:bob"
CID = STRONG_CID


def rev(n: int) -> str:
    return tid_from_micros(1_767_225_600_000_000 + n * 1000)


def op(action: str, did: str, collection: str, rkey: str, n: int, record: dict | None = None) -> RecordOp:
    """An op on the record named `rkey` (a readable name, turned into a TID key)."""
    return RecordOp(
        action, did, collection, tid_key(rkey), rev(n), None if action == "delete" else CID, record
    )


def track_uri(did: str = ALICE, rkey: str = "t1") -> str:
    return f"at://{did}/fm.plyr.track/{tid_key(rkey)}"


async def apply(pool: asyncpg.Pool, ops: list[RecordOp], **kw: object) -> writer.BatchResult:
    async with pool.acquire() as conn:
        return await apply_batch(conn, ops, lexicons=default_lexicons(), **kw)  # type: ignore[arg-type]


async def counts(pool: asyncpg.Pool, subject: str) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT like_count, comment_count FROM track_counts WHERE subject_uri = $1", subject
    )
    return (row["like_count"], row["comment_count"]) if row else (0, 0)


async def test_create_update_and_stale_replay(pool: asyncpg.Pool) -> None:
    res = await apply(pool, [op("create", ALICE, "fm.plyr.track", "t1", 1, track_record("One"))])
    assert res.applied == 1 and res.new_dids == [ALICE]
    await apply(pool, [op("update", ALICE, "fm.plyr.track", "t1", 3, track_record("Three"))])
    # An older update and a replay of the same rev are both ignored.
    res = await apply(
        pool,
        [
            op("update", ALICE, "fm.plyr.track", "t1", 2, track_record("Two")),
            op("update", ALICE, "fm.plyr.track", "t1", 3, track_record("Three again")),
        ],
    )
    assert res.applied == 0 and res.stale == 2
    row = await pool.fetchrow("SELECT title, rev, sort_at, created_at FROM tracks WHERE uri = $1", track_uri())
    assert row["title"] == "Three" and row["rev"] == rev(3)
    assert row["sort_at"] == row["created_at"]  # createdAt is in the past
    actor = await pool.fetchrow("SELECT repo_rev FROM actors WHERE did = $1", ALICE)
    assert actor["repo_rev"] == rev(3)


async def test_future_created_at_sorts_at_index_time(pool: asyncpg.Pool) -> None:
    await apply(
        pool,
        [op("create", ALICE, "fm.plyr.track", "t1", 1, track_record(created_at="2999-01-01T00:00:00Z"))],
    )
    row = await pool.fetchrow("SELECT sort_at, indexed_at, created_at FROM tracks")
    assert row["sort_at"] == row["indexed_at"] < row["created_at"]


async def test_delete_then_replayed_create_stays_deleted(pool: asyncpg.Pool) -> None:
    create = op("create", ALICE, "fm.plyr.track", "t1", 1, track_record())
    await apply(pool, [create])
    await apply(pool, [op("delete", ALICE, "fm.plyr.track", "t1", 2)])
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 0
    assert await pool.fetchval("SELECT rev FROM tombstones WHERE uri = $1", track_uri()) == rev(2)
    res = await apply(pool, [create])  # the old create, replayed
    assert res.stale == 1
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 0
    # A newer create of the same key (a re-publish) does come back.
    await apply(pool, [op("create", ALICE, "fm.plyr.track", "t1", 5, track_record("Again"))])
    assert await pool.fetchval("SELECT title FROM tracks") == "Again"
    # ...and the old delete replayed does not remove it.
    await apply(pool, [op("delete", ALICE, "fm.plyr.track", "t1", 2)])
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 1


async def test_delete_of_unseen_record_blocks_later_old_create(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("delete", ALICE, "fm.plyr.like", "l1", 4)])
    await apply(pool, [op("create", ALICE, "fm.plyr.like", "l1", 3, like_record(track_uri()))])
    assert await pool.fetchval("SELECT count(*) FROM likes") == 0
    assert await counts(pool, track_uri()) == (0, 0)


async def test_like_before_track_counts_and_unlike(pool: asyncpg.Pool) -> None:
    subject = track_uri(BOB, "t9")
    await apply(pool, [op("create", ALICE, "fm.plyr.like", "l1", 1, like_record(subject))])
    assert await counts(pool, subject) == (1, 0)
    await apply(pool, [op("create", BOB, "fm.plyr.track", "t9", 1, track_record())])
    assert await counts(pool, subject) == (1, 0)
    # Replay of the like: no double count.
    await apply(pool, [op("create", ALICE, "fm.plyr.like", "l1", 1, like_record(subject))])
    assert await counts(pool, subject) == (1, 0)
    # An update that keeps the subject keeps the count; one that moves it moves the count.
    await apply(pool, [op("update", ALICE, "fm.plyr.like", "l1", 2, like_record(subject))])
    assert await counts(pool, subject) == (1, 0)
    other = track_uri(BOB, "t10")
    await apply(pool, [op("update", ALICE, "fm.plyr.like", "l1", 3, like_record(other))])
    assert await counts(pool, subject) == (0, 0) and await counts(pool, other) == (1, 0)
    await apply(pool, [op("delete", ALICE, "fm.plyr.like", "l1", 4)])
    assert await counts(pool, other) == (0, 0)
    # Deleting again (replay) does not go negative.
    await apply(pool, [op("delete", ALICE, "fm.plyr.like", "l1", 5)])
    assert await counts(pool, other) == (0, 0)


async def test_comments_count_and_update(pool: asyncpg.Pool) -> None:
    subject = track_uri()
    await apply(
        pool,
        [
            op("create", BOB, "fm.plyr.comment", "c1", 1, comment_record(subject, "first")),
            op("create", BOB, "fm.plyr.comment", "c2", 2, comment_record(subject, "second", 5)),
        ],
    )
    assert await counts(pool, subject) == (0, 2)
    rec = comment_record(subject, "edited") | {"updatedAt": "2026-01-02T00:00:00Z"}
    await apply(pool, [op("update", BOB, "fm.plyr.comment", "c1", 3, rec)])
    row = await pool.fetchrow("SELECT text, updated_at FROM comments WHERE rkey = $1", tid_key("c1"))
    assert row["text"] == "edited" and row["updated_at"] is not None
    assert await counts(pool, subject) == (0, 2)


async def test_same_uri_twice_in_one_batch(pool: asyncpg.Pool) -> None:
    subject = track_uri()
    res = await apply(
        pool,
        [
            op("create", ALICE, "fm.plyr.like", "l1", 1, like_record(subject)),
            op("delete", ALICE, "fm.plyr.like", "l1", 2),
            op("create", ALICE, "fm.plyr.like", "l2", 3, like_record(subject)),
        ],
    )
    assert res.applied == 2
    assert await pool.fetchval("SELECT array_agg(rkey) FROM likes") == [tid_key("l2")]
    assert await counts(pool, subject) == (1, 0)
    assert await pool.fetchval("SELECT count(*) FROM tombstones") == 1


async def test_invalid_record_is_dead_lettered_and_the_rest_applies(pool: asyncpg.Pool) -> None:
    bad = op("create", ALICE, "fm.plyr.track", "t2", 2, {"$type": "fm.plyr.track", "title": 5})
    wrong_type = op("create", ALICE, "fm.plyr.like", "l1", 2, track_record())
    bad.seq = 42
    res = await apply(
        pool,
        [op("create", ALICE, "fm.plyr.track", "t1", 1, track_record()), bad, wrong_type],
        source="test",
        cursor=CursorUpdate("test", 42),
    )
    assert res.applied == 1 and res.invalid == 2
    rows = await pool.fetch("SELECT * FROM dead_letters ORDER BY id")
    assert [r["uri"] for r in rows] == [
        track_uri(ALICE, "t2"), f"at://{ALICE}/fm.plyr.like/{tid_key('l1')}"
    ]
    assert rows[0]["seq"] == 42 and rows[0]["source"] == "test"
    assert "title" in rows[0]["reason"] and rows[0]["record"] == {"$type": "fm.plyr.track", "title": 5}
    assert "$type" in rows[1]["reason"]
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 1


async def test_unindexed_plyr_collection_is_skipped(pool: asyncpg.Pool) -> None:
    res = await apply(pool, [op("create", ALICE, "fm.plyr.privateMedia", "x", 1, {"$type": "fm.plyr.privateMedia"})])
    assert res.skipped == 1 and res.invalid == 0


async def test_lists_and_items(pool: asyncpg.Pool) -> None:
    a, b, c = track_uri(rkey="a"), track_uri(rkey="b"), track_uri(rkey="c")
    await apply(pool, [op("create", ALICE, "fm.plyr.list", "p1", 1, list_record([a, b]))])
    assert await pool.fetchval("SELECT item_count FROM lists") == 2
    await apply(pool, [op("update", ALICE, "fm.plyr.list", "p1", 2, list_record([c, b, a], "New"))])
    items = await pool.fetch("SELECT subject_uri FROM list_items ORDER BY position")
    assert [r["subject_uri"] for r in items] == [c, b, a]
    assert await pool.fetchval("SELECT name FROM lists") == "New"
    await apply(pool, [op("delete", ALICE, "fm.plyr.list", "p1", 3)])
    assert await pool.fetchval("SELECT count(*) FROM list_items") == 0


async def test_profile_rkey_must_be_self(pool: asyncpg.Pool) -> None:
    res = await apply(
        pool,
        [
            op("create", ALICE, "fm.plyr.actor.profile", "self", 1, profile_record("bio")),
            op("create", ALICE, "fm.plyr.actor.profile", "other", 1, profile_record("x")),
        ],
    )
    assert res.applied == 1 and res.invalid == 1
    assert await pool.fetchval("SELECT bio FROM profiles") == "bio"


async def test_cursor_in_same_transaction_as_rows(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    await apply(pool, [op("create", ALICE, "fm.plyr.like", "l0", 1, like_record(track_uri()))], cursor=CursorUpdate("relay", 10))

    async def crash(*_a: object, **_k: object) -> None:
        raise RuntimeError("crash between rows and cursor")

    monkeypatch.setattr(writer_apply, "write_cursor", crash)
    with pytest.raises(RuntimeError):
        await apply(
            pool,
            [op("create", ALICE, "fm.plyr.like", "l1", 2, like_record(track_uri()))],
            cursor=CursorUpdate("relay", 20),
        )
    # Nothing of the failed batch is visible, and the cursor still covers only the first.
    assert await pool.fetchval("SELECT seq FROM cursors WHERE source = 'relay'") == 10
    assert await pool.fetchval("SELECT count(*) FROM likes") == 1
    assert await counts(pool, track_uri()) == (1, 0)


async def test_cursor_fence(pool: asyncpg.Pool) -> None:
    await apply(pool, [], cursor=CursorUpdate("relay", 10, expected=None))
    await apply(pool, [], cursor=CursorUpdate("relay", 20, expected=10))
    with pytest.raises(CursorConflict):
        await apply(pool, [], cursor=CursorUpdate("relay", 30, expected=10))
    assert await pool.fetchval("SELECT seq FROM cursors") == 20


async def test_dead_letters_and_resync_marks_with_batch(pool: asyncpg.Pool) -> None:
    await apply(
        pool,
        [],
        dead_letters=[DeadLetter("bad signature", seq=7, did=BOB, raw=b"\x01\x02")],
        repo_revs={BOB: rev(9)},
        resync={BOB: "since mismatch"},
        source="relay",
    )
    actor = await pool.fetchrow("SELECT * FROM actors WHERE did = $1", BOB)
    assert actor["needs_resync"] and actor["resync_reason"] == "since mismatch" and actor["repo_rev"] == rev(9)
    dl = await pool.fetchrow("SELECT * FROM dead_letters")
    assert dl["raw"] == b"\x01\x02" and dl["reason"] == "bad signature"
    # repo_rev never goes backwards
    await apply(pool, [], repo_revs={BOB: rev(3)})
    assert await pool.fetchval("SELECT repo_rev FROM actors WHERE did = $1", BOB) == rev(9)


async def test_account_deactivate_reactivate_delete(pool: asyncpg.Pool) -> None:
    subject = track_uri(BOB, "t1")
    await apply(
        pool,
        [
            op("create", ALICE, "fm.plyr.like", "l1", 1, like_record(subject)),
            op("create", ALICE, "fm.plyr.comment", "c1", 1, comment_record(subject)),
            op("create", ALICE, "fm.plyr.track", "t1", 1, track_record()),
            op("create", BOB, "fm.plyr.like", "l1", 1, like_record(subject)),
        ],
    )
    assert await counts(pool, subject) == (2, 1)
    async with pool.acquire() as conn:
        assert await apply_account(conn, AccountChange(ALICE, False, "deactivated")) == "hidden"
    assert await counts(pool, subject) == (1, 0)
    actor = await pool.fetchrow("SELECT visible, status FROM actors WHERE did = $1", ALICE)
    assert actor["visible"] is False and actor["status"] == "deactivated"
    assert await pool.fetchval("SELECT count(*) FROM likes WHERE did = $1", ALICE) == 1  # kept
    # A like by a hidden actor does not count while hidden, and counts when shown again.
    await apply(pool, [op("create", ALICE, "fm.plyr.like", "l2", 2, like_record(subject))])
    assert await counts(pool, subject) == (1, 0)
    async with pool.acquire() as conn:
        assert await apply_account(conn, AccountChange(ALICE, True)) == "shown"
    assert await counts(pool, subject) == (3, 1)
    async with pool.acquire() as conn:
        assert await apply_account(conn, AccountChange(ALICE, False, "deleted"), cursor=CursorUpdate("relay", 99)) == "deleted"
    assert await counts(pool, subject) == (1, 0)
    for table in ("likes", "comments", "tracks"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table} WHERE did = $1", ALICE) == 0
    assert await pool.fetchval("SELECT count(*) FROM tombstones WHERE did = $1", ALICE) == 4
    assert await pool.fetchval("SELECT seq FROM cursors") == 99
    # Old writes replayed after deletion stay out (status gate and tombstones).
    await apply(pool, [op("create", ALICE, "fm.plyr.like", "l1", 1, like_record(subject))])
    assert await pool.fetchval("SELECT count(*) FROM likes WHERE did = $1", ALICE) == 0
    async with pool.acquire() as conn:
        await apply_account(conn, AccountChange(ALICE, True))
    await apply(pool, [op("create", ALICE, "fm.plyr.like", "l1", 1, like_record(subject))])
    assert await pool.fetchval("SELECT count(*) FROM likes WHERE did = $1", ALICE) == 0
    assert await counts(pool, subject) == (1, 0)


async def test_account_status_of_unknown_did(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await apply_account(conn, AccountChange("did:plc:nobody", True)) == "unknown actor"
    assert await pool.fetchval("SELECT count(*) FROM actors") == 0
    async with pool.acquire() as conn:
        assert await apply_account(conn, AccountChange("did:plc:nobody", False, "takendown")) == "remembered"
    row = await pool.fetchrow("SELECT status, visible FROM actors")
    assert tuple(row) == ("takendown", False)
    # A like written later (a backfill that fetched before the takedown) stays uncounted.
    await apply(pool, [op("create", "did:plc:nobody", "fm.plyr.like", "l1", 1, like_record(track_uri()))])
    assert await counts(pool, track_uri()) == (0, 0)


# ---- oracle: a reference model fed the same random ops, compared at the end ----------------


def _model_apply(state: dict, ops: list[RecordOp]) -> None:
    rows, tombs = state["rows"], state["tombs"]
    for o in ops:
        uri = o.uri
        floor = max(rows.get(uri, ("",))[0], tombs.get(uri, ""))
        if o.rev <= floor:
            continue
        if o.action == "delete":
            rows.pop(uri, None)
            tombs[uri] = o.rev
        else:
            rows[uri] = (o.rev, o.record["subject"]["uri"] if "subject" in o.record else None)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_ops_match_reference_model(pool: asyncpg.Pool, seed: int) -> None:
    rnd = random.Random(seed)
    subjects = [track_uri(BOB, f"s{i}") for i in range(3)]
    ops: list[RecordOp] = []
    for _ in range(300):
        did = rnd.choice([ALICE, BOB])
        coll = rnd.choice(["fm.plyr.like", "fm.plyr.comment", "fm.plyr.track"])
        rkey = f"k{rnd.randrange(6)}"
        n = rnd.randrange(1, 40)
        action = rnd.choice(["create", "update", "delete"])
        if action == "delete":
            ops.append(op("delete", did, coll, rkey, n))
        elif coll == "fm.plyr.like":
            ops.append(op(action, did, coll, rkey, n, like_record(rnd.choice(subjects))))
        elif coll == "fm.plyr.comment":
            ops.append(op(action, did, coll, rkey, n, comment_record(rnd.choice(subjects))))
        else:
            ops.append(op(action, did, coll, rkey, n, track_record(f"T{n}")))
    state: dict = {"rows": {}, "tombs": {}}
    _model_apply(state, ops)
    i = 0
    while i < len(ops):
        size = rnd.randrange(1, 40)
        await apply(pool, ops[i : i + size])
        i += size
    stored = {}
    for table, has_subject in (("likes", True), ("comments", True), ("tracks", False)):
        for r in await pool.fetch(
            f"SELECT uri, rev, {'subject_uri' if has_subject else 'NULL'} AS s FROM {table}"
        ):
            stored[r["uri"]] = (r["rev"], r["s"])
    assert stored == state["rows"]
    # Tombstones: what matters is the rev below which writes are refused, per URI (a tombstone
    # under a newer row is irrelevant, so batching may skip writing it).
    tombs = {r["uri"]: r["rev"] for r in await pool.fetch("SELECT uri, rev FROM tombstones")}

    def floors(rows: dict, tomb: dict) -> dict:
        return {u: max(rows.get(u, ("",))[0], tomb.get(u, "")) for u in set(rows) | set(tomb)}

    assert floors(stored, tombs) == floors(state["rows"], state["tombs"])
    for s in subjects:
        likes = sum(1 for u, (_r, subj) in state["rows"].items() if "/fm.plyr.like/" in u and subj == s)
        comments = sum(1 for u, (_r, subj) in state["rows"].items() if "/fm.plyr.comment/" in u and subj == s)
        assert await counts(pool, s) == (likes, comments)
