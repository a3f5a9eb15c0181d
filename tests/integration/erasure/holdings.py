"""What the database still holds about a DID: every column of every table that can hold text
(text, varchar, arrays, json/jsonb, bytea), found from information_schema, so a table added
later is covered without touching this file. A table, or some of its rows, may be exempted,
each with the reason it may keep naming the account after an erasure."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Exempt:
    reason: str
    rows: str = "true"  # a SQL condition on the table's rows (`$1` is the DID): those may stay


# Whatever the erasure's origin.
ALWAYS: dict[str, Exempt] = {
    "erasure_requests": Exempt("the record that the erasure happened, with its counts: the user reads it back"),
    "labels": Exempt("labelers' signed statements about the account or its records: theirs, not our data"),
    "own_labels": Exempt("our labeler's signed public labels: moderation decisions, kept as their audit"),
    "moderation_actions": Exempt("the operators' audit log of what they did to the account or its records"),
    "copyright_reviews": Exempt("moderators' copyright decisions, naming the tracks decided on"),
    "copyright_allowlist": Exempt("a moderator's decision that the artist owns a reference (in their favour)"),
    "plays": Exempt("other listeners' plays of the account's tracks (their listening, and the tracks' public "
                    "counts)", rows="listener_did <> $1"),
    "play_dedupe": Exempt("other listeners' dedupe gates of the account's tracks", rows="listener_did <> $1"),
    "play_counts": Exempt("the public play counter of the account's tracks, counting other listeners' plays"),
    "reports": Exempt("reports other accounts filed about the account or its records",
                      rows="reported_by <> $1"),
    "copyright_scans": Exempt(
        "scans a moderator reviewed (the evidence of a decision), and scans of audio another account "
        "publishes whose matches name the account's track",
        rows="EXISTS (SELECT 1 FROM copyright_reviews v WHERE v.scan_id = copyright_scans.id) "
             "OR sha256 IN (SELECT sha256 FROM media_objects)",
    ),
}

# deleteAccountData leaves the user's repo alone: the index of its records stays.
REPO: dict[str, Exempt] = {
    table: Exempt("the index of the account's repo (deleteAccountData does not touch the repo)")
    for table in ("actors", "tracks", "likes", "comments", "lists", "list_items", "profiles", "tombstones",
                  "dead_letters", "track_counts", "actor_counts", "backfill_repos", "audit_repos",
                  "network_plays", "network_play_counts")
}

# An `#account` deleted event: the indexer removed the records (indexer/writer/accounts.py).
DELETED: dict[str, Exempt] = {
    "actors": Exempt("the DID with status deleted and nothing else: late or replayed records stay hidden"),
    "tombstones": Exempt("URIs and revs of the deleted records: a replayed create cannot bring one back"),
    "backfill_repos": Exempt("the operational state of fetching the (public) repo: rev, counts, PDS URL"),
    "audit_repos": Exempt("drift counts of past audits of the (public) repo"),
    "likes": Exempt("other accounts' likes of the account's tracks: their records", rows="did <> $1"),
    "comments": Exempt("other accounts' comments on the account's tracks: their records", rows="did <> $1"),
    "list_items": Exempt("other accounts' lists holding the account's tracks: their records",
                         rows="list_uri NOT LIKE 'at://' || $1 || '/%'"),
    "track_counts": Exempt("counters of other accounts' likes and comments of the account's tracks"),
    "network_plays": Exempt("other listeners' teal.fm play records naming the account's tracks: their records",
                            rows="did <> $1"),
    "network_play_counts": Exempt("counters of other listeners' network plays of the account's tracks"),
}

TEXTUAL = ("text", "character varying", "character", "ARRAY", "json", "jsonb", "bytea", "USER-DEFINED")


async def holdings(pool: asyncpg.Pool, did: str, exempt: dict[str, Exempt]) -> dict[str, int]:
    """`table.column` -> rows naming `did` that no exemption covers."""
    columns = await pool.fetch(
        """SELECT c.table_schema, c.table_name, c.column_name, c.data_type
           FROM information_schema.columns c
           JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
           WHERE t.table_type = 'BASE TABLE' AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
             AND c.data_type = ANY($1::text[])
           ORDER BY 1, 2, 3""",
        list(TEXTUAL),
    )
    assert len({c["table_name"] for c in columns}) >= 40, "fewer tables than the schema has: query broken?"
    found: dict[str, int] = {}
    for c in columns:
        table = f'"{c["table_schema"]}"."{c["table_name"]}"'
        col = f'"{c["column_name"]}"'
        if c["data_type"] == "bytea":
            match = f"position(convert_to($1, 'UTF8') in {col}) > 0"
        else:
            match = f"strpos({col}::text, $1) > 0"
        rule = exempt.get(c["table_name"])
        allowed = f" AND NOT ({rule.rows})" if rule is not None else ""
        n = await pool.fetchval(f"SELECT count(*) FROM {table} WHERE {match}{allowed}", did)
        if n:
            found[f'{c["table_name"]}.{c["column_name"]}'] = n
    return found


async def tables_naming(pool: asyncpg.Pool, did: str) -> set[str]:
    """Every table with a row naming `did` (no exemption)."""
    return {key.split(".")[0] for key in await holdings(pool, did, {})}
