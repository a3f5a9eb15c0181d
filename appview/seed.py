"""`plyr seed-demo`: a realistic synthetic index, for benchmarks and demos.

The records (profiles, tracks, likes, comments, lists) are built valid per our lexicons and
written through the indexer's write path (indexer/seed.py); the plays, which are the AppView's,
through the plays module (`add_plays`). Every counter is then what the owners keep.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from appview.methods.plays import Play, add_plays
from core.db import Connection
from core.errors import PlyrError
from indexer.seed import RecordSize, SeededTrack, popular, seed_records

PLAYS_BATCH = 50_000
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass(frozen=True)
class SeedSize:
    tracks: int = 100_000
    artists: int = 10_000
    likes: int = 1_000_000
    comments: int = 200_000
    plays: int = 1_000_000

    def __str__(self) -> str:
        return (f"{self.tracks} tracks, {self.artists} artists, {self.likes} likes, "
                f"{self.comments} comments, {self.plays} plays")


async def seed(
    conn: Connection,
    size: SeedSize,
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda _m: None,
) -> None:
    existing = await conn.fetchval("SELECT count(*) FROM (SELECT 1 FROM tracks LIMIT 1) s")
    if existing and not force:
        raise PlyrError("the index already holds tracks; use --force to add the demo data anyway")
    # A second seeding makes new identifiers, not conflicts.
    salt = "".join(secrets.choice(_B32) for _ in range(8))
    tracks = await seed_records(
        conn,
        RecordSize(tracks=size.tracks, artists=size.artists, likes=size.likes, comments=size.comments),
        salt=salt,
        progress=progress,
    )
    progress(f"plays: {size.plays}")
    await _seed_plays(conn, size, salt, tracks)
    progress("analyze")
    await conn.execute("ANALYZE")


async def _seed_plays(
    conn: Connection, size: SeedSize, salt: str, tracks: Sequence[SeededTrack]
) -> None:
    """Plays by the seeded artists, on popular tracks, within the last 90 days and never before
    their track was published."""
    if not tracks:
        return
    rng = random.Random(salt + "plays")
    now = datetime.now(UTC)
    listeners = sorted({t.did for t in tracks})
    batch: list[Play] = []
    for _ in range(size.plays):
        track = popular(rng, tracks)
        played = max(track.created_at, now - timedelta(seconds=rng.random() * 90 * 86400))
        listener = listeners[int(rng.random() * len(listeners))]
        batch.append((track.uri, track.did, listener, track.duration_s * 1000, played))
        if len(batch) == PLAYS_BATCH:
            await _add(conn, batch)
            batch = []
    if batch:
        await _add(conn, batch)


async def _add(conn: Connection, plays: list[Play]) -> None:
    async with conn.transaction():
        await add_plays(conn, plays)
