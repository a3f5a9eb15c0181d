"""Account status, moderation takedowns and handles: `#account` events hide, show or delete an
actor's rows, with their counters and mirror requests, in one transaction with the cursor; an
account takedown by a moderation labeler (indexer/labels/) hides it the same way.

An actor is visible when its status is `active` and no moderation labeler has taken it down
(`moderation_takedown`): the two are kept apart, so a reactivation on its PDS does not undo a
takedown, and lifting a takedown does not show a deactivated account."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from core.db import Connection
from indexer import crashpoints
from indexer.crashpoints import ARMED as _CRASH_ARMED
from indexer.writer.counts import forget_actor, move_actor
from indexer.writer.cursor import CursorUpdate, write_cursor
from indexer.writer.locks import lock_dids
from indexer.writer.network_match import apply_matches, delete_actor_plays, lock_actor_tracks
from indexer.writer.outbox import request_actor_mirrors, request_erasure
from indexer.writer.statements import TABLE


@dataclass(slots=True)
class AccountChange:
    did: str
    active: bool
    status: str | None = None
    seq: int | None = None


async def apply_account(
    conn: Connection, change: AccountChange, *, cursor: CursorUpdate | None = None
) -> str:
    """Apply an `#account` event to an actor we index; returns what happened (for logs).

    inactive -> hidden (rows kept, counts without them); active -> shown again (counts back);
    status `deleted` -> the actor's rows removed, tombstoned at their rev, counts adjusted, its
    dead letters and handle/name/avatar dropped, and an erasure of the data the other services
    hold requested (`erasure_outbox`, appview/erasure.py).
    An inactive status of a DID with no actors row yet is stored (a hidden actor row): records
    that arrive later (a backfill racing the stream, a late delivery) must stay hidden too.
    An active event for an unknown DID changes nothing. An active event for an actor taken down
    by a moderation labeler stores the status and keeps it hidden.
    """
    async with conn.transaction():
        await lock_dids(conn, [change.did])
        row = await conn.fetchrow(
            "SELECT status, visible, repo_rev, moderation_takedown FROM actors WHERE did = $1",
            change.did,
        )
        outcome = "unknown actor"
        if row is None and not change.active:
            await conn.execute(
                """INSERT INTO actors (did, status, visible) VALUES ($1, $2, false)
                   ON CONFLICT (did) DO NOTHING""",
                change.did,
                change.status or "deactivated",
            )
            outcome = "remembered"
            if change.status == "deleted":  # a listener with no records may still have data with us
                await conn.execute("DELETE FROM dead_letters WHERE did = $1", change.did)
                await request_erasure(conn, change.did)
        elif row is not None:
            was_visible = row["visible"]
            if change.active:
                visible = not row["moderation_takedown"]
                outcome = "shown" if visible else "active, kept hidden (moderation takedown)"
                if visible and not was_visible:
                    await move_actor(conn, change.did, +1)
                    await request_actor_mirrors(conn, change.did)
                await conn.execute(
                    """UPDATE actors SET status = 'active', visible = $2, updated_at = now()
                       WHERE did = $1""",
                    change.did,
                    visible,
                )
            else:
                status = change.status or "deactivated"
                if was_visible:
                    await move_actor(conn, change.did, -1)
                if status == "deleted":
                    await _delete_actor_rows(conn, change.did, row["repo_rev"])
                    await forget_actor(conn, change.did)
                    await request_erasure(conn, change.did)
                    outcome = "deleted"
                else:
                    outcome = "hidden"
                await conn.execute(
                    "UPDATE actors SET status = $2, visible = false, updated_at = now() WHERE did = $1",
                    change.did,
                    status,
                )
        if cursor is not None:
            await write_cursor(conn, cursor)
        if _CRASH_ARMED:
            crashpoints.hit("account_before_commit")
    return outcome


async def apply_moderation_takedowns(conn: Connection, changes: Mapping[str, bool]) -> dict[str, str]:
    """Set (True) or lift (False) moderation labelers' takedown of these accounts, in the
    caller's transaction; returns what happened per DID (for logs).

    Visibility follows (visible = status `active` and not taken down), and the actor's rows move
    out of or into the counts exactly as for an `#account` change. A takedown of a DID with no
    actors row yet stores a hidden row (status `active`: nothing says otherwise), so records
    that arrive later stay hidden; lifting one for an unknown DID changes nothing.
    """
    if not changes:
        return {}
    dids = sorted(changes)
    outcomes: dict[str, str] = {}
    async with conn.transaction():
        # All at once: lock_dids orders the keys, as every writer does (no deadlocks).
        await lock_dids(conn, dids)
        rows = {
            r["did"]: r
            for r in await conn.fetch(
                "SELECT did, status, visible, moderation_takedown FROM actors WHERE did = ANY($1::text[])",
                dids,
            )
        }
        for did in dids:
            takedown = changes[did]
            row = rows.get(did)
            if row is None:
                if takedown:
                    await conn.execute(
                        """INSERT INTO actors (did, visible, moderation_takedown) VALUES ($1, false, true)
                           ON CONFLICT (did) DO NOTHING""",
                        did,
                    )
                outcomes[did] = "remembered" if takedown else "unknown actor"
                continue
            if row["moderation_takedown"] == takedown:
                outcomes[did] = "unchanged"
                continue
            visible = row["status"] == "active" and not takedown
            if visible != row["visible"]:
                await move_actor(conn, did, +1 if visible else -1)
                if visible:
                    await request_actor_mirrors(conn, did)
            await conn.execute(
                """UPDATE actors SET moderation_takedown = $2, visible = $3, updated_at = now()
                   WHERE did = $1""",
                did,
                takedown,
                visible,
            )
            outcome = "taken down" if takedown else "restored"
            if visible != row["visible"]:
                outcome += ", shown" if visible else ", hidden"
            outcomes[did] = outcome
    return outcomes


async def _delete_actor_rows(conn: Connection, did: str, repo_rev: str | None) -> None:
    # Tombstone every record at max(its rev, the repo's newest rev): replays stay dead.
    rematch = await lock_actor_tracks(conn, did)  # network plays naming its tracks: re-decided
    for collection, table in TABLE.items():
        await conn.execute(
            f"""WITH gone AS (DELETE FROM {table} WHERE did = $1 RETURNING uri, rev)
                INSERT INTO tombstones (uri, did, collection, rev)
                SELECT uri, $1, $2,
                       CASE WHEN $3::text IS NOT NULL AND $3::text COLLATE "C" > rev
                            THEN $3::text ELSE rev END
                FROM gone
                ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev, deleted_at = now()
                WHERE tombstones.rev < excluded.rev""",
            did,
            collection,
            repo_rev,
        )
    await delete_actor_plays(conn, did, repo_rev)  # network plays: one table, two collections
    await apply_matches(conn, rematch)
    # What else the index held of the account: versions of its records it refused, and who
    # the account was (the DID and status stay, see above).
    await conn.execute("DELETE FROM dead_letters WHERE did = $1", did)
    await conn.execute("UPDATE actors SET handle = NULL, display_name = NULL, avatar_url = NULL WHERE did = $1", did)


async def update_handle(conn: Connection | asyncpg.Pool, did: str, handle: str | None) -> None:
    """Store the bidirectionally verified handle (or NULL) of an indexed actor."""
    await conn.execute(
        "UPDATE actors SET handle = $2, updated_at = now() WHERE did = $1 AND handle IS DISTINCT FROM $2",
        did,
        handle,
    )
