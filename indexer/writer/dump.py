"""`records dump`: every indexed record of visible actors given back as published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from indexer.network_plays import NETWORK_PLAY_COLLECTIONS
from indexer.records import INDEXED_COLLECTIONS, LIKE
from indexer.writer.statements import TABLE

# Network plays of both collections share one table.
_FROM = {**TABLE, **{c: "network_plays" for c in NETWORK_PLAY_COLLECTIONS}}

_DUMP_VALUE = {
    # Likes written before migration 0002 have no stored record: rebuild it from the columns.
    LIKE: """coalesce(t.record, jsonb_build_object('$type', 'fm.plyr.like', 'subject',
               jsonb_build_object('uri', t.subject_uri, 'cid', t.subject_cid),
               'createdAt', to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))""",
}


async def dump_records(pool: asyncpg.Pool, collection: str | None = None) -> AsyncIterator[dict[str, Any]]:
    """Indexed records of visible actors, by collection then URI: {uri, cid, rev, value}."""
    collections = [collection] if collection else sorted(INDEXED_COLLECTIONS + NETWORK_PLAY_COLLECTIONS)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        for coll in collections:
            value = _DUMP_VALUE.get(coll, "t.record")
            only = "AND t.collection = $1" if coll in NETWORK_PLAY_COLLECTIONS else "AND $1::text IS NOT NULL"
            query = f"""SELECT t.uri, t.cid, t.rev, {value} AS value, t.record_exact
                        FROM {_FROM[coll]} t
                        JOIN actors a ON a.did = t.did WHERE a.visible {only} ORDER BY t.uri"""
            async for r in conn.cursor(query, coll, prefetch=1000):
                exact = r["record_exact"]  # the record as published when jsonb could not hold it
                value = orjson.loads(exact) if exact is not None else r["value"]
                yield {"uri": r["uri"], "cid": r["cid"], "rev": r["rev"], "value": value}
