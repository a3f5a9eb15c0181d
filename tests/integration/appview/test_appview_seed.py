"""`plyr seed-demo`'s generator at a small size: well-formed identifiers, records our lexicons
accept, counts consistent with the rows, and views that pass the lexicons."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from appview.seed import SeedSize, seed
from core import db
from core.errors import PlyrError


async def test_seed_demo_small(database_url: str, make_client: Any, pool: asyncpg.Pool) -> None:
    size = SeedSize(tracks=600, artists=40, likes=4000, comments=700, plays=3000)
    conn = await db.connect(database_url)
    try:
        await seed(conn, size)
        with pytest.raises(PlyrError):
            await seed(conn, size)  # refuses to seed over existing data without force
    finally:
        await conn.close()
    counts = {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in ("tracks", "actors", "likes", "comments", "plays")}
    assert counts == {"tracks": 600, "actors": 40, "likes": 4000, "comments": 700, "plays": 3000}
    mismatched = await pool.fetchval(
        """SELECT count(*) FROM tracks t
           LEFT JOIN track_counts c ON c.subject_uri = t.uri
           LEFT JOIN play_counts p ON p.track_uri = t.uri WHERE
             coalesce(c.like_count, 0) <> (SELECT count(*) FROM likes l WHERE l.subject_uri = t.uri)
          OR coalesce(c.comment_count, 0) <> (SELECT count(*) FROM comments m WHERE m.subject_uri = t.uri)
          OR coalesce(p.play_count, 0) <> (SELECT count(*) FROM plays p WHERE p.track_uri = t.uri)""")
    assert mismatched == 0
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0  # every record valid
    assert await pool.fetchval("SELECT count(*) FROM likes l JOIN tracks t ON t.uri = l.subject_uri "
                               "WHERE l.created_at < t.created_at") == 0

    client = await make_client()  # validates every output against the lexicons
    latest = await (await client.get("/xrpc/fm.plyr.feed.getLatestTracks", params={"limit": 50})).json()
    assert len(latest["tracks"]) == 50
    top = await (await client.get("/xrpc/fm.plyr.feed.getTopTracks", params={"period": "month"})).json()
    assert len(top["tracks"]) == 50  # many tracks were liked within the last month
    uri = top["tracks"][0]["uri"]
    comments = await client.get("/xrpc/fm.plyr.feed.getComments", params={"uri": uri})
    assert comments.status == 200
    stats = await (await client.get("/xrpc/fm.plyr.stats.getPlatformStats")).json()
    assert stats["tracks"] == 600 and stats["likes"] == 4000 and stats["plays"] == 3000
    assert (await client.get("/xrpc/fm.plyr.search.searchTracks", params={"q": "midnight"})).status == 200
