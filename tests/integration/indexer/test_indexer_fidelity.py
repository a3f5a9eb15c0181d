"""Index fidelity on a real Postgres: a record our lexicons accept is indexed whole; the newest
version of a record being invalid hides it, like a delete, until a valid version comes.

Each test names the issue-10 case it holds (docs/invariants.md, "fidelity").
"""

from __future__ import annotations

import copy
from typing import Any

import asyncpg

from core.lexicons import LEXICONS_DIR
from indexer.deadletters import replay_dead_letters
from indexer.records import RecordOp
from indexer.writer import BatchResult, apply_batch, default_lexicons, dump_records
from protocol.lexicon import Lexicons
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


def rev(n: int) -> str:
    return tid_from_micros(1_767_225_600_000_000 + n * 1000)


def op(action: str, did: str, collection: str, name: str, n: int, record: dict | None = None,
       *, cid: str = STRONG_CID, raw_rkey: bool = False) -> RecordOp:  # fmt: skip
    rkey = name if raw_rkey else tid_key(name)
    return RecordOp(action, did, collection, rkey, rev(n), None if action == "delete" else cid, record)


def uri(did: str, collection: str, name: str) -> str:
    return f"at://{did}/{collection}/{tid_key(name)}"


async def apply(pool: asyncpg.Pool, ops: list[RecordOp], lexicons: Any = None) -> BatchResult:
    async with pool.acquire() as conn:
        return await apply_batch(conn, ops, lexicons=lexicons or default_lexicons())


async def dumped(pool: asyncpg.Pool) -> dict[str, Any]:
    return {d["uri"]: d["value"] async for d in dump_records(pool)}


async def counts(pool: asyncpg.Pool, subject: str) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT like_count, comment_count FROM track_counts WHERE subject_uri = $1", subject
    )
    return (row["like_count"], row["comment_count"]) if row else (0, 0)


async def test_values_the_lexicon_allows_are_indexed_whole(pool: asyncpg.Pool) -> None:
    # Case 1 of the issue: nothing narrower than the lexicon (a column type, a conversion).
    # The longest at-uri shapes pass a btree index entry's ~2.7 KB limit.
    long_nsid = "com.example." + ".".join(["n" * 60] * 4) + "x"
    long_subject = "at://did:plc:" + "a" * 2030 + "/" + long_nsid + "/" + "k" * 512
    records = {
        "big": track_record("Big", duration=3_000_000_000),
        "max": track_record("Max", duration=2**63 - 1),
        "year0": track_record("Zero", created_at="0000-01-01T00:00:00Z"),
        "early": track_record("Early", created_at="0001-01-01T00:00:00+14:00"),
        "late": track_record("Late", created_at="9999-12-31T23:59:59.123456789-14:00"),
        "nul": track_record("NUL \x00 inside", description="a\x00b", extra={"k\x00": ["\x00"]}),
    }
    ops = [op("create", ALICE, "fm.plyr.track", name, 1, rec) for name, rec in records.items()]
    ops.append(op("create", ALICE, "fm.plyr.like", "long", 1, like_record(long_subject)))
    ops.append(op("create", ALICE, "fm.plyr.comment", "ts", 1,
                  comment_record(uri(BOB, "fm.plyr.track", "x"), ts=2**63 - 1)))  # fmt: skip
    res = await apply(pool, ops)
    assert res.invalid == 0 and res.applied == len(ops)
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0

    dump = await dumped(pool)
    for name, rec in records.items():
        assert dump[uri(ALICE, "fm.plyr.track", name)] == rec
    assert dump[uri(ALICE, "fm.plyr.like", "long")]["subject"]["uri"] == long_subject
    # Typed columns are derived: clamped, or with U+FFFD where text cannot hold NUL.
    row = await pool.fetchrow(
        "SELECT title, duration_s FROM tracks WHERE uri = $1", uri(ALICE, "fm.plyr.track", "nul")
    )
    assert row["title"] == "NUL \ufffd inside"
    assert await pool.fetchval(
        "SELECT duration_s FROM tracks WHERE uri = $1", uri(ALICE, "fm.plyr.track", "max")
    ) == 2**63 - 1
    years = await pool.fetch("SELECT extract(year FROM created_at)::int AS y FROM tracks ORDER BY 1")
    assert {r["y"] for r in years} >= {1, 9999}


async def test_record_keys_follow_the_lexicon_key_type(pool: asyncpg.Pool) -> None:
    # Case 2: fm.plyr.track/my-favourite-track is refused (the track lexicon says "key": "tid").
    res = await apply(pool, [
        op("create", ALICE, "fm.plyr.track", "my-favourite-track", 1, track_record(), raw_rkey=True),
        op("create", ALICE, "fm.plyr.actor.profile", "self", 1, profile_record(), raw_rkey=True),
        op("create", BOB, "fm.plyr.actor.profile", "main", 1, profile_record(), raw_rkey=True),
        op("create", ALICE, "fm.plyr.like", "ok", 1, like_record(uri(BOB, "fm.plyr.track", "t"))),
    ])  # fmt: skip
    assert res.applied == 2 and res.invalid == 2
    reasons = [r["reason"] for r in await pool.fetch("SELECT reason FROM dead_letters ORDER BY id")]
    assert all("rkey" in r for r in reasons), reasons
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 0
    # A delete at any well-formed key is applied (it can only remove).
    res = await apply(pool, [
        op("delete", ALICE, "fm.plyr.track", "my-favourite-track", 2, raw_rkey=True),
    ])  # fmt: skip
    assert res.invalid == 0


async def test_invalid_update_hides_the_record_and_a_valid_one_brings_it_back(
    pool: asyncpg.Pool,
) -> None:
    # Case 3: valid -> invalid -> valid, with the likes and comments it counts.
    track = uri(ALICE, "fm.plyr.track", "t")
    await apply(pool, [
        op("create", ALICE, "fm.plyr.track", "t", 1, track_record("Song")),
        op("create", BOB, "fm.plyr.like", "l", 1, like_record(track)),
        op("create", BOB, "fm.plyr.comment", "c", 1, comment_record(track)),
        op("create", BOB, "fm.plyr.list", "p", 1, list_record([track])),
        op("create", ALICE, "fm.plyr.actor.profile", "self", 1, profile_record("hi"), raw_rkey=True),
    ])  # fmt: skip
    assert await counts(pool, track) == (1, 1)

    res = await apply(pool, [
        op("update", ALICE, "fm.plyr.track", "t", 2, track_record("")),
        op("update", BOB, "fm.plyr.like", "l", 2, {"$type": "fm.plyr.like", "createdAt": "x"}),
        op("update", BOB, "fm.plyr.comment", "c", 2, comment_record(track, text="")),
        op("update", BOB, "fm.plyr.list", "p", 2, list_record([track]) | {"items": "no"}),
        op("update", ALICE, "fm.plyr.actor.profile", "self", 2, profile_record("é" * 257),
           raw_rkey=True),
    ])  # fmt: skip
    assert res.invalid == 5 and res.hidden == 5 and res.applied == 0
    assert await dumped(pool) == {}
    assert await counts(pool, track) == (0, 0)
    assert await pool.fetchval("SELECT count(*) FROM list_items") == 0
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 5

    # The same invalid versions met again (a replayed stream, a backfill) change nothing.
    again = await apply(pool, [
        op("update", ALICE, "fm.plyr.track", "t", 2, track_record("")),
    ])  # fmt: skip
    assert again.stale == 1
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 5

    # An older valid version arriving late stays hidden.
    late = await apply(
        pool, [op("update", ALICE, "fm.plyr.track", "t", 1, track_record("Song"), cid="bafyold")]
    )
    assert late.stale == 1 and await dumped(pool) == {}

    await apply(pool, [
        op("update", ALICE, "fm.plyr.track", "t", 3, track_record("Back")),
        op("update", BOB, "fm.plyr.like", "l", 3, like_record(track)),
        op("update", BOB, "fm.plyr.comment", "c", 3, comment_record(track)),
    ])  # fmt: skip
    dump = await dumped(pool)
    assert dump[track]["title"] == "Back" and len(dump) == 3
    assert await counts(pool, track) == (1, 1)


async def test_replay_after_a_lexicon_fix_brings_the_hidden_version_back(
    pool: asyncpg.Pool,
) -> None:
    # A stricter lexicon (as if ours had a bug): titles of at most 3 bytes.
    docs = []
    for path in sorted(LEXICONS_DIR.rglob("*.json")):
        import orjson

        doc = orjson.loads(path.read_bytes())
        if doc["id"] == "fm.plyr.track":
            doc = copy.deepcopy(doc)
            doc["defs"]["main"]["record"]["properties"]["title"]["maxLength"] = 3
        docs.append(doc)
    strict = Lexicons.load(docs)
    track = uri(ALICE, "fm.plyr.track", "t")
    await apply(pool, [op("create", ALICE, "fm.plyr.track", "t", 1, track_record("Hi"))], strict)
    res = await apply(
        pool, [op("update", ALICE, "fm.plyr.track", "t", 2, track_record("Longer"), cid="bafyx")],
        strict,
    )
    assert res.hidden == 1 and await dumped(pool) == {}

    summary = await replay_dead_letters(pool, verify=False, lexicons=default_lexicons())
    assert summary == {"applied": 1, "still_invalid": 0}
    dump = await dumped(pool)
    assert dump[track]["title"] == "Longer"


async def test_nesting_deeper_than_the_data_model_limit_is_refused_by_validation(
    pool: asyncpg.Pool,
) -> None:
    deep: Any = "leaf"
    for _ in range(200):
        deep = {"d": deep}
    res = await apply(pool, [op("create", ALICE, "fm.plyr.track", "t", 1, track_record(x=deep))])
    assert res.invalid == 1
    reason = await pool.fetchval("SELECT reason FROM dead_letters")
    assert "nested deeper than 128" in reason


async def test_a_nul_record_dead_lettered_by_the_old_code_replays(pool: asyncpg.Pool) -> None:
    # Before records kept U+0000, such a record was dead-lettered with its JSON bytes in `raw`.
    import orjson

    rec = track_record("nul \x00 title")
    track = uri(ALICE, "fm.plyr.track", "t")
    await pool.execute(
        """INSERT INTO dead_letters (source, uri, did, collection, rev, cid, reason, raw)
           VALUES ('test', $1, $2, 'fm.plyr.track', $3, $4, 'record contains U+0000', $5)""",
        track, ALICE, rev(1), STRONG_CID, orjson.dumps(rec),
    )  # fmt: skip
    summary = await replay_dead_letters(pool, verify=False, lexicons=default_lexicons())
    assert summary == {"applied": 1, "still_invalid": 0}
    assert (await dumped(pool))[track] == rec
