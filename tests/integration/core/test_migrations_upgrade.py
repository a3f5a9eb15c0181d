"""`plyr migrate` on an install that already holds data: the counter and mirror migrations
(0005, 0014, 0022) fill their tables from the rows, so that the counters equal a rebuild and a
track mirrored before plays from the same copy after."""

from __future__ import annotations

import shutil
from pathlib import Path

from core import db
from core.migrate import MIGRATIONS_DIR, apply_migrations
from indexer.writer import recount

NEW = ("0005_counters_and_mirror_outbox.sql", "0014_play_counts.sql", "0022_media_mirrors.sql")
ANN, BOB = "did:plc:annannannannannannannann", "did:plc:bobbobbobbobbobbobbobbob"
T1, T2 = f"at://{ANN}/fm.plyr.track/3kaaaaaaaaaa2", f"at://{BOB}/fm.plyr.track/3kaaaaaaaaab2"

# What the writer and the plays module of before kept: counts in track_counts (plays too),
# and the mirror's URL written over tracks.audio_url. Bob is hidden: his like is not counted.
_BEFORE = f"""
INSERT INTO actors (did, visible, status) VALUES ('{ANN}', true, 'active'), ('{BOB}', false, 'deactivated');
INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, file_type, audio_url, audio_blob_cid,
                    duration_s, record, created_at, sort_at)
VALUES ('{T1}', '{ANN}', '3kaaaaaaaaaa2', 'bafyreia', '3kaaaaaaaaaa2', 'One', 'Ann', 'mp3',
        'https://media.test/ours.mp3', 'bafkreiblob', 100,
        '{{"audioBlob": {{}}}}'::jsonb, now(), now()),
       ('{T2}', '{BOB}', '3kaaaaaaaaab2', 'bafyreib', '3kaaaaaaaaab2', 'Two', 'Bob', 'mp3',
        'https://bob.test/two.mp3', NULL, 50,
        '{{"audioUrl": "https://bob.test/two.mp3"}}'::jsonb, now(), now());
INSERT INTO likes (uri, did, rkey, cid, rev, subject_uri, subject_cid, created_at, sort_at)
VALUES ('at://{ANN}/fm.plyr.like/3kaaaaaaaaac2', '{ANN}', '3kaaaaaaaaac2', 'bafyreic',
        '3kaaaaaaaaac2', '{T1}', 'bafyreia', now(), now()),
       ('at://{BOB}/fm.plyr.like/3kaaaaaaaaad2', '{BOB}', '3kaaaaaaaaad2', 'bafyreid',
        '3kaaaaaaaaad2', '{T1}', 'bafyreia', now(), now());
INSERT INTO track_counts (subject_uri, like_count, comment_count, play_count)
VALUES ('{T1}', 1, 0, 7), ('{T2}', 0, 0, 2);
"""


async def test_upgrade_fills_counters_and_mirrors(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    # The install of before: every migration older than the last of NEW but those. Later ones
    # may build on NEW's tables (0042 indexes media_mirrors): they come after, as they did.
    last_new = max(int(name[:4]) for name in NEW)
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if path.name not in NEW and int(path.name[:4]) < last_new:
            shutil.copy(path, folder / path.name)
    conn = await db.connect(database_url)
    try:
        # A schema of its own: the test database has every migration applied already.
        await conn.execute("CREATE SCHEMA upgrade; SET search_path = upgrade, public")
        await apply_migrations(conn, folder)
        await conn.execute(_BEFORE)
        for path in MIGRATIONS_DIR.glob("*.sql"):
            if not (folder / path.name).exists():
                shutil.copy(path, folder / path.name)
        applied = await apply_migrations(conn, folder)
        assert applied[: len(NEW)] == list(NEW) and len(applied) > len(NEW)

        assert await conn.fetchval("SELECT play_count FROM play_counts WHERE track_uri = $1", T1) == 7
        assert await conn.fetchval("SELECT sum(plays) FROM play_totals") == 9
        assert await conn.fetchval(
            "SELECT to_regclass('upgrade.track_counts') IS NOT NULL AND NOT EXISTS ("
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'upgrade' "
            "AND table_name = 'track_counts' AND column_name = 'play_count')"
        )
        ann = await conn.fetchrow("SELECT * FROM actor_counts WHERE did = $1", ANN)
        assert (ann["track_count"], ann["like_count"], ann["track_seconds"]) == (1, 1, 100)
        totals = await conn.fetchrow(
            "SELECT sum(tracks) AS tracks, sum(artists) AS artists, sum(likes) AS likes, "
            "sum(track_seconds) AS seconds FROM index_totals"
        )
        assert tuple(totals) == (1, 1, 1, 100)  # Bob is hidden
        mirrors = await conn.fetch("SELECT track_uri, blob_cid, url FROM media_mirrors")
        assert [tuple(r) for r in mirrors] == [(T1, "bafkreiblob", "https://media.test/ours.mp3")]
        audio = {r["uri"]: r["audio_url"] for r in await conn.fetch("SELECT uri, audio_url FROM tracks")}
        assert audio == {T1: None, T2: "https://bob.test/two.mp3"}  # what the records say

        before = [tuple(r) for r in await conn.fetch("SELECT * FROM actor_counts ORDER BY did")]
        await recount(conn)
        assert [tuple(r) for r in await conn.fetch("SELECT * FROM actor_counts ORDER BY did")] == before
        assert tuple(
            await conn.fetchrow("SELECT sum(tracks), sum(artists), sum(likes), sum(track_seconds) FROM index_totals")
        ) == (1, 1, 1, 100)
    finally:
        await conn.close()
