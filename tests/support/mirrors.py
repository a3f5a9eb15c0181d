"""What a track plays from, as the AppView's track view computes it (appview/hydrate.py)."""

from __future__ import annotations

import asyncpg


async def played_url(pool: asyncpg.Pool, uri: str) -> str | None:
    """Our copy of the blob the track carries now (media_mirrors), else the record's audioUrl."""
    return await pool.fetchval(
        """SELECT coalesce(m.url, t.audio_url) FROM tracks t
           LEFT JOIN media_mirrors m ON m.track_uri = t.uri AND m.blob_cid = t.audio_blob_cid
           WHERE t.uri = $1""",
        uri,
    )
