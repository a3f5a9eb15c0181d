"""Network plays (teal.fm play records) through the real writer on Postgres: stored whole, matched
to a plyr track by URL or metadata whatever the arrival order, counted once per record URI,
updates and deletes, refused versions, hidden and deleted listeners."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import pytest

from indexer.records import RecordOp
from indexer.writer import AccountChange, apply_account, apply_batch, default_lexicons, recount
from indexer.writer.network_match import fill_track_keys, sync_page_hosts
from protocol.syntax import tid_from_micros
from tests.support.frames import STRONG_CID, track_record
from tests.support.rkeys import tid_key

ARTIST = "did:plc:artist"
OTHER_ARTIST = "did:plc:other"
LISTENER = "did:plc:listener"
LISTENER2 = "did:plc:listener2"
ALPHA = "fm.teal.alpha.feed.play"
PLAY = "fm.teal.feed.play"


def rev(n: int) -> str:
    return tid_from_micros(1_767_225_600_000_000 + n * 1000)


def op(action: str, did: str, collection: str, rkey: str, n: int, record: dict[str, Any] | None = None) -> RecordOp:
    return RecordOp(action, did, collection, tid_key(rkey), rev(n), None if action == "delete" else STRONG_CID, record)


def uri(did: str, collection: str, rkey: str) -> str:
    return f"at://{did}/{collection}/{tid_key(rkey)}"


_SECONDS = itertools.count()


def play(name: str = "Night Drive", artists: list[str] | None = None, collection: str = ALPHA, **extra: Any) -> dict[str, Any]:
    # Each play its own playedTime: the same listener, time and name would be one listen twice.
    n = next(_SECONDS)
    at = f"2026-01-02T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
    record: dict[str, Any] = {"$type": collection, "trackName": name, "playedTime": at}
    if artists is not None:
        record["artists"] = [{"artistName": a} for a in artists]
    return {**record, **extra}


def track(title: str = "Night Drive", artist: str = "Moon Unit", **extra: Any) -> dict[str, Any]:
    return track_record(title, artist=artist, **extra)


async def apply(pool: asyncpg.Pool, ops: list[RecordOp]) -> Any:
    async with pool.acquire() as conn:
        return await apply_batch(conn, ops, lexicons=default_lexicons())


async def matched(pool: asyncpg.Pool, play_uri: str) -> tuple[str | None, str | None]:
    row = await pool.fetchrow("SELECT track_uri, match_method FROM network_plays WHERE uri = $1", play_uri)
    assert row is not None, play_uri
    return row["track_uri"], row["match_method"]


async def count(pool: asyncpg.Pool, track_uri: str) -> int:
    n = await pool.fetchval("SELECT play_count FROM network_play_counts WHERE track_uri = $1", track_uri)
    return int(n or 0)


async def url_count(pool: asyncpg.Pool, track_uri: str) -> int:
    n = await pool.fetchval("SELECT url_count FROM network_play_counts WHERE track_uri = $1", track_uri)
    return int(n or 0)


_COUNTS = "SELECT track_uri, play_count, url_count FROM network_play_counts WHERE play_count <> 0 ORDER BY 1"


async def assert_recount_agrees(pool: asyncpg.Pool) -> None:
    before = await pool.fetch(_COUNTS)
    async with pool.acquire() as conn:
        await recount(conn)
    after = await pool.fetch(_COUNTS)
    assert [tuple(r) for r in before] == [tuple(r) for r in after]


T1 = uri(ARTIST, "fm.plyr.track", "t1")
P1 = uri(LISTENER, ALPHA, "p1")


async def test_metadata_match_and_record_kept_whole(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 1, track(duration=200))])
    record = play("  NIGHT   drive! ", ["moon unit"], duration=202, isrc="XX", releaseMbId="not-a-uri")
    res = await apply(pool, [op("create", LISTENER, ALPHA, "p1", 2, record)])
    assert res.applied == 1 and res.invalid == 0
    assert await matched(pool, P1) == (T1, "metadata")
    assert await count(pool, T1) == 1
    stored = await pool.fetchval("SELECT record FROM network_plays WHERE uri = $1", P1)
    assert stored == record  # whole, unknown fields and legacy plain MBIDs included
    await assert_recount_agrees(pool)


async def test_metadata_needs_artist_and_close_duration(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 1, track(duration=200))])
    await apply(
        pool,
        [
            op("create", LISTENER, ALPHA, "a", 2, play(artists=["Someone Else"])),
            op("create", LISTENER, ALPHA, "b", 2, play(artists=["Moon Unit"], duration=210)),
            op("create", LISTENER, ALPHA, "c", 2, play(artistNames=["Moon Unit"], duration=197)),
            op("create", LISTENER, PLAY, "d", 2, play(collection=PLAY, artists=["Moon Unit"])),
        ],
    )
    assert await matched(pool, uri(LISTENER, ALPHA, "a")) == (None, None)
    assert await matched(pool, uri(LISTENER, ALPHA, "b")) == (None, None)
    assert await matched(pool, uri(LISTENER, ALPHA, "c")) == (T1, "metadata")  # deprecated artistNames
    assert await matched(pool, uri(LISTENER, PLAY, "d")) == (T1, "metadata")  # no duration: name and artist
    assert await count(pool, T1) == 2


async def test_play_before_its_track_and_ambiguity(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", LISTENER, ALPHA, "p1", 1, play(artists=["Moon Unit"]))])
    assert await matched(pool, P1) == (None, None)
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 2, track())])
    assert await matched(pool, P1) == (T1, "metadata")
    assert await count(pool, T1) == 1
    # A second track with the same title and artist: the play is no longer certain of either.
    await apply(pool, [op("create", OTHER_ARTIST, "fm.plyr.track", "t2", 3, track())])
    assert await matched(pool, P1) == (None, None)
    assert await count(pool, T1) == 0
    # Renamed: one candidate again.
    await apply(pool, [op("update", OTHER_ARTIST, "fm.plyr.track", "t2", 4, track("Day Drive"))])
    assert await matched(pool, P1) == (T1, "metadata")
    # The track deleted: the play matches nothing; its count goes.
    await apply(pool, [op("delete", ARTIST, "fm.plyr.track", "t1", 5)])
    assert await matched(pool, P1) == (None, None)
    assert await count(pool, T1) == 0
    await assert_recount_agrees(pool)


async def test_url_matches_are_certain(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 1, track())])
    short_id = await pool.fetchval("SELECT short_id FROM tracks WHERE uri = $1", T1)
    async with pool.acquire() as conn:
        await sync_page_hosts(conn, ["plyr.example"])
    await apply(
        pool,
        [
            # an at:// URI names the track whatever the metadata says
            op("create", LISTENER, ALPHA, "a", 2, play("Something else", originUrl=T1)),
            op("create", LISTENER, PLAY, "b", 2, play("x", collection=PLAY, originUri=f"https://plyr.example/track/{short_id}")),
            op("create", LISTENER, ALPHA, "c", 2, play("x", originUrl=f"https://elsewhere.example/track/{short_id}")),
            op("create", LISTENER, ALPHA, "d", 2, play("x", originUrl=f"http://PLYR.example/embed/track/{short_id}/?t=3")),
        ],
    )
    assert await matched(pool, uri(LISTENER, ALPHA, "a")) == (T1, "url")
    assert await matched(pool, uri(LISTENER, PLAY, "b")) == (T1, "url")
    assert await matched(pool, uri(LISTENER, ALPHA, "c")) == (None, None)  # not our host
    assert await matched(pool, uri(LISTENER, ALPHA, "d")) == (T1, "url")
    assert await count(pool, T1) == 3 and await url_count(pool, T1) == 3
    # A play whose URL names the track and whose metadata would too: by URL, once.
    await apply(pool, [op("create", LISTENER2, ALPHA, "e", 3, play(artists=["Moon Unit"], originUrl=T1))])
    assert await matched(pool, uri(LISTENER2, ALPHA, "e")) == (T1, "url")
    await apply(pool, [op("update", LISTENER2, ALPHA, "e", 4, play(artists=["Moon Unit"]))])
    assert await matched(pool, uri(LISTENER2, ALPHA, "e")) == (T1, "metadata")
    assert await count(pool, T1) == 4 and await url_count(pool, T1) == 3
    await apply(pool, [op("delete", LISTENER2, ALPHA, "e", 5)])
    assert await count(pool, T1) == 3 and await url_count(pool, T1) == 3
    # The other host becomes ours: its play matches (and stops when it is no longer).
    async with pool.acquire() as conn:
        await sync_page_hosts(conn, ["plyr.example", "elsewhere.example"])
    assert await matched(pool, uri(LISTENER, ALPHA, "c")) == (T1, "url")
    async with pool.acquire() as conn:
        await sync_page_hosts(conn, ["plyr.example"])
    assert await matched(pool, uri(LISTENER, ALPHA, "c")) == (None, None)
    assert await count(pool, T1) == 3 and await url_count(pool, T1) == 3
    await apply(pool, [op("delete", LISTENER, ALPHA, "a", 6)])
    assert await count(pool, T1) == 2 and await url_count(pool, T1) == 2
    await assert_recount_agrees(pool)


async def test_updates_replace_and_deletes_remove(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 1, track())])
    await apply(pool, [op("create", LISTENER, ALPHA, "p1", 2, play(artists=["Moon Unit"]))])
    # The same record written again (a putRecord retry) and an update: one play, never two.
    await apply(pool, [op("update", LISTENER, ALPHA, "p1", 3, play(artists=["Moon Unit"]))])
    assert await count(pool, T1) == 1
    await apply(pool, [op("update", LISTENER, ALPHA, "p1", 4, play("Other", artists=["Moon Unit"]))])
    assert await matched(pool, P1) == (None, None)
    assert await count(pool, T1) == 0
    await apply(pool, [op("update", LISTENER, ALPHA, "p1", 5, play(artists=["Moon Unit"]))])
    assert await count(pool, T1) == 1
    # An older version replayed changes nothing; a delete removes the play and its count.
    res = await apply(pool, [op("update", LISTENER, ALPHA, "p1", 3, play("Older", artists=["Moon Unit"]))])
    assert res.stale == 1 and await count(pool, T1) == 1
    await apply(pool, [op("delete", LISTENER, ALPHA, "p1", 6)])
    assert await pool.fetchval("SELECT count(*) FROM network_plays") == 0
    assert await count(pool, T1) == 0
    assert await pool.fetchval("SELECT rev FROM tombstones WHERE uri = $1", P1) == rev(6)
    # A create older than the delete stays dead.
    res = await apply(pool, [op("create", LISTENER, ALPHA, "p1", 5, play(artists=["Moon Unit"]))])
    assert res.stale == 1 and await count(pool, T1) == 0


async def test_refused_versions_are_not_indexed_and_hide_the_play(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 1, track())])
    await apply(pool, [op("create", LISTENER, ALPHA, "p1", 2, play(artists=["Moon Unit"]))])
    assert await count(pool, T1) == 1
    bad: list[dict[str, Any]] = [
        {"$type": ALPHA, "trackName": 5},  # wrong type
        {"$type": ALPHA, "trackName": ""},  # below minLength
        {"$type": ALPHA, "trackName": "x" * 257},  # above maxLength (bytes)
        {"$type": ALPHA, "trackName": "x", "duration": "200"},
        {"$type": ALPHA, "trackName": "x", "artists": [{"name": "no artistName"}]},
        {"$type": ALPHA, "trackName": "x", "playedTime": "yesterday"},
        {"$type": PLAY, "trackName": "x", "releaseMbId": "plain-uuid-not-a-uri"},
        {"$type": PLAY, "trackName": "x", "originUri": "no scheme"},
    ]
    for i, record in enumerate(bad):
        collection = record["$type"]
        res = await apply(pool, [op("create", LISTENER2, collection, f"bad{i}", 10 + i, record)])
        assert res.invalid == 1 and res.applied == 0, record
    assert await pool.fetchval("SELECT count(*) FROM network_plays WHERE did = $1", LISTENER2) == 0
    # The newest version of a counted play refused: it leaves the index and the count.
    res = await apply(pool, [op("update", LISTENER, ALPHA, "p1", 30, {"$type": ALPHA, "trackName": ""})])
    assert res.invalid == 1 and res.hidden == 1
    assert await pool.fetchval("SELECT count(*) FROM network_plays WHERE uri = $1", P1) == 0
    assert await count(pool, T1) == 0


async def test_hostile_sizes_are_kept_whole(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 1, track())])
    record = play(
        "Night Drive",
        [f"artist {i}" for i in range(2000)] + ["Moon Unit"],  # thousands (the lexicon sets no bound)
        originUrl="https://" + "a" * 200_000,  # a huge URL (no bound either)
        isrc="\x00nul",
        duration=-(2**63),
        submissionClientAgent="agent",
    )
    res = await apply(pool, [op("create", LISTENER, ALPHA, "p1", 2, record)])
    assert res.applied == 1 and res.invalid == 0
    row = await pool.fetchrow("SELECT record_exact, duration_s, track_uri FROM network_plays WHERE uri = $1", P1)
    assert row["duration_s"] == -(2**63)
    assert row["record_exact"] is not None  # U+0000: the exact JSON beside the jsonb
    # Only the first artists are matched on (the record keeps them all): not this one.
    assert row["track_uri"] is None


async def test_hidden_and_deleted_listeners(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 1, track())])
    await apply(
        pool,
        [
            op("create", LISTENER, ALPHA, "p1", 2, play(artists=["Moon Unit"])),
            op("create", LISTENER2, PLAY, "p2", 2, play(collection=PLAY, originUri=T1)),
        ],
    )
    assert await count(pool, T1) == 2
    async with pool.acquire() as conn:
        await apply_account(conn, AccountChange(LISTENER, False, "deactivated"))
    assert await count(pool, T1) == 1
    # A hidden listener's new play is stored but not counted.
    await apply(pool, [op("create", LISTENER, ALPHA, "p3", 3, play(artists=["Moon Unit"]))])
    assert await count(pool, T1) == 1
    async with pool.acquire() as conn:
        await apply_account(conn, AccountChange(LISTENER, True, None))
    assert await count(pool, T1) == 3
    await assert_recount_agrees(pool)
    async with pool.acquire() as conn:
        await apply_account(conn, AccountChange(LISTENER, False, "deleted"))
    assert await count(pool, T1) == 1
    assert await pool.fetchval("SELECT count(*) FROM network_plays WHERE did = $1", LISTENER) == 0
    tomb = await pool.fetch("SELECT collection FROM tombstones WHERE did = $1", LISTENER)
    assert sorted(r["collection"] for r in tomb) == [ALPHA, ALPHA]
    # Replayed after the deletion: nothing comes back.
    res = await apply(pool, [op("create", LISTENER, ALPHA, "p1", 2, play(artists=["Moon Unit"]))])
    assert res.applied == 0
    assert await count(pool, T1) == 1


async def test_tracks_indexed_before_matching_get_keys(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", LISTENER, ALPHA, "p1", 1, play(artists=["Moon Unit"]))])
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 2, track())])
    # As if indexed before migration 0044: no keys, no match.
    await pool.execute("UPDATE tracks SET match_key = NULL, artist_key = NULL")
    await pool.execute("UPDATE network_plays SET track_uri = NULL, match_method = NULL")
    await pool.execute("DELETE FROM network_play_counts")
    async with pool.acquire() as conn:
        assert await fill_track_keys(conn) == 1
        assert await fill_track_keys(conn) == 0
    assert await matched(pool, P1) == (T1, "metadata")
    assert await count(pool, T1) == 1


async def test_concurrent_writers_meet(pool: asyncpg.Pool) -> None:
    """A play and its track written at once by two writers (the live indexer and a backfill):
    the per-key locks make the later one see the earlier, whichever commits first."""
    for i in range(5):
        t_rkey, p_rkey = f"t{i}", f"p{i}"
        title = f"Song {i}"
        await asyncio.gather(
            apply(pool, [op("create", ARTIST, "fm.plyr.track", t_rkey, 1, track(title))]),
            apply(pool, [op("create", LISTENER, ALPHA, p_rkey, 1, play(title, ["Moon Unit"]))]),
        )
        assert await matched(pool, uri(LISTENER, ALPHA, p_rkey)) == (uri(ARTIST, "fm.plyr.track", t_rkey), "metadata")


@pytest.mark.parametrize("collection", [ALPHA, PLAY])
async def test_dump_gives_plays_back(pool: asyncpg.Pool, collection: str) -> None:
    from indexer.writer import dump_records

    record = play(collection=collection, artists=["A"])
    await apply(pool, [op("create", LISTENER, collection, "p1", 1, record)])
    rows = [r async for r in dump_records(pool, collection)]
    assert [r["value"] for r in rows] == [record]
    other = ALPHA if collection == PLAY else PLAY
    assert [r async for r in dump_records(pool, other)] == []


async def test_track_edits_rematch_only_when_matching_reads_them(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 1, track(duration=200))])
    await apply(pool, [op("create", LISTENER, ALPHA, "p1", 2, play(artists=["Moon Unit"], duration=199))])
    assert await matched(pool, P1) == (T1, "metadata")
    # A new description: nothing matching reads; the match stays.
    await apply(pool, [op("update", ARTIST, "fm.plyr.track", "t1", 3, track(duration=200, description="new"))])
    assert await matched(pool, P1) == (T1, "metadata") and await count(pool, T1) == 1
    # The duration moves out of the tolerance: no longer a match; back in: a match again.
    await apply(pool, [op("update", ARTIST, "fm.plyr.track", "t1", 4, track(duration=260))])
    assert await matched(pool, P1) == (None, None) and await count(pool, T1) == 0
    await apply(pool, [op("update", ARTIST, "fm.plyr.track", "t1", 5, track(duration=201))])
    assert await matched(pool, P1) == (T1, "metadata") and await count(pool, T1) == 1
    # The artist renamed: no longer the play's artist.
    await apply(pool, [op("update", ARTIST, "fm.plyr.track", "t1", 6, track(artist="Sun Unit", duration=201))])
    assert await matched(pool, P1) == (None, None) and await count(pool, T1) == 0
    await assert_recount_agrees(pool)


async def test_an_artist_account_deleted_re_decides_plays(pool: asyncpg.Pool) -> None:
    # Two artists with the same title and name: the play is ambiguous until one account goes.
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 1, track())])
    await apply(pool, [op("create", OTHER_ARTIST, "fm.plyr.track", "t2", 1, track())])
    await apply(pool, [op("create", LISTENER, ALPHA, "p1", 2, play(artists=["Moon Unit"]))])
    assert await matched(pool, P1) == (None, None)
    async with pool.acquire() as conn:
        await apply_account(conn, AccountChange(OTHER_ARTIST, False, "deleted"))
    assert await matched(pool, P1) == (T1, "metadata") and await count(pool, T1) == 1
    async with pool.acquire() as conn:
        await apply_account(conn, AccountChange(ARTIST, False, "deleted"))
    assert await matched(pool, P1) == (None, None) and await count(pool, T1) == 0
    await assert_recount_agrees(pool)


async def test_a_legacy_play_and_its_migrated_copy_count_once(pool: asyncpg.Pool) -> None:
    await apply(pool, [op("create", ARTIST, "fm.plyr.track", "t1", 1, track())])
    legacy = play(artists=["Moon Unit"])
    copy = legacy | {"$type": PLAY}
    await apply(pool, [op("create", LISTENER, ALPHA, "p1", 2, legacy)])
    assert await count(pool, T1) == 1
    # teal's migration: the copy in fm.teal.feed.play (same playedTime and name) ...
    await apply(pool, [op("create", LISTENER, PLAY, "c1", 3, copy)])
    assert await count(pool, T1) == 1
    assert await matched(pool, P1) == (None, None)
    assert await matched(pool, uri(LISTENER, PLAY, "c1")) == (T1, "metadata")
    # ... a different listen at another time still counts on its own ...
    await apply(pool, [op("create", LISTENER, ALPHA, "p2", 4, legacy | {"playedTime": "2026-01-02T04:00:00Z"})])
    assert await count(pool, T1) == 2
    # ... and if the copy goes, the legacy record counts again; then the legacy one is deleted.
    await apply(pool, [op("delete", LISTENER, PLAY, "c1", 5)])
    assert await matched(pool, P1) == (T1, "metadata") and await count(pool, T1) == 2
    await apply(pool, [op("create", LISTENER, PLAY, "c1", 6, copy)])
    await apply(pool, [op("delete", LISTENER, ALPHA, "p1", 7)])
    assert await count(pool, T1) == 2
    await assert_recount_agrees(pool)
