"""Mirror requests: the indexer asks media to copy a track's PDS audio blob, through an outbox.

A track version applied with an `audioBlob`, by a visible actor, writes a row to `mirror_outbox`
in the batch's transaction (so a request exists exactly when the row does) and NOTIFYs
MIRROR_OUTBOX_CHANNEL, delivered at commit. Media (media/mirror_requests.py) consumes the rows:
it deletes what it takes and turns each request into at most one live `mirror` job, skipping
blobs it has mirrored for that track already, so a request may be made more than once at no cost.

Tracks of hidden actors (deactivated, taken down) are not requested - their PDS does not serve
their blobs - until `apply_account` shows the actor again, which requests all its tracks'
blobs (media skips the ones it holds). Ops the rev rules ignore (replays) request nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.db import Connection

# media/mirror_requests.py listens on the same name.
MIRROR_OUTBOX_CHANNEL = "plyr_mirror_outbox"

# (track uri, did, blob cid, mime type)
MirrorRequest = tuple[str, str, str, str]

INSERT_MIRRORS = """
INSERT INTO mirror_outbox (track_uri, did, blob_cid, mime_type)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
"""


def blob_mime(record: Mapping[str, Any] | None) -> str:
    blob = (record or {}).get("audioBlob")
    mime = blob.get("mimeType") if isinstance(blob, dict) else None
    return mime if isinstance(mime, str) and mime else "application/octet-stream"


async def request_mirrors(conn: Connection, requests: list[MirrorRequest]) -> None:
    """Queue `requests` in the caller's transaction, and wake media at commit."""
    if not requests:
        return
    await conn.execute(INSERT_MIRRORS, *(list(col) for col in zip(*requests, strict=True)))
    await conn.execute("SELECT pg_notify($1, '')", MIRROR_OUTBOX_CHANNEL)


async def request_actor_mirrors(conn: Connection, did: str) -> None:
    """Requests for every track of `did` that carries a blob (the actor is visible again)."""
    rows = await conn.fetch(
        """SELECT uri, audio_blob_cid, record->'audioBlob'->>'mimeType' AS mime FROM tracks
           WHERE did = $1 AND audio_blob_cid IS NOT NULL""",
        did,
    )
    await request_mirrors(
        conn,
        [(r["uri"], did, r["audio_blob_cid"], r["mime"] or "application/octet-stream") for r in rows],
    )


# appview/erasure.py takes erasure_outbox rows (it polls; the NOTIFY is for anyone listening).
ERASURE_OUTBOX_CHANNEL = "plyr_erasure_outbox"


async def request_erasure(conn: Connection, did: str) -> None:
    """Ask for the erasure of what the other services hold about `did` (its account was deleted),
    in the caller's transaction: the AppView consumes `erasure_outbox` (appview/erasure.py) and
    media follows (media/erasure.py)."""
    await conn.execute("INSERT INTO erasure_outbox (did) VALUES ($1)", did)
    await conn.execute("SELECT pg_notify($1, $2)", ERASURE_OUTBOX_CHANNEL, did)
