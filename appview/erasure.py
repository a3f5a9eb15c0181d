"""Account data erasure (issue 17): what we hold about an account that is not in its repo.

A request comes from the user (`fm.plyr.actor.deleteAccountData`, service auth, their own DID
only) or from the indexer when the account is deleted on its PDS (`#account` status deleted:
indexer/writer/accounts.py writes `erasure_outbox` in the transaction that removes the
account's records; `consume_forever` here, run by every AppView process, takes those rows).

Each service deletes its own tables (docs/architecture.md, one owner per table):
- the AppView, here, in one transaction that also records the request (`erasure_requests`,
  this module's table) with the AppView's part done: the account's plays as a listener with
  their dedupe gates and counters (`plays.forget_listener`), queue and preferences
  (`viewer.forget_viewer`), the reports it filed (`reports.forget_reporter`), its rate-limit
  counts (`core.ratelimit.forget_did`); then NOTIFY ERASURE_CHANNEL;
- media (media/erasure.py) takes every request without a part of its own, deletes uploads and
  our copies of the account's media that no other account's track uses (objects, renditions,
  blob copies, fingerprints, copyright scans, stored files), exports, jobs, and records its part
  (`erasure_media_parts`: `deleting`, then `done` once the stored files are gone).

deleteAccountData answers the receipt once media's part is done, or after
PLYR_APPVIEW_ERASURE_WAIT_SECONDS with that part `pending`; `getAccountDataDeletion` reads a
receipt later. Requests are serialised per DID (an advisory lock) and each one deletes what is
there when it runs, so repeating one is safe: the repeat's receipt counts nothing and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from appview.context import Call, Route
from appview.errors import not_found
from appview.methods.plays import forget_listener
from appview.methods.viewer import forget_viewer
from appview.moderation.actions import iso
from appview.moderation.reports import forget_reporter
from core.db import Connection
from core.ratelimit import forget_did

log = logging.getLogger("plyr.appview.erasure")

# media/erasure.py listens on this name; indexer/writer/accounts.py NOTIFYs OUTBOX_CHANNEL.
ERASURE_CHANNEL = "plyr_erasure_requests"
LOCK_CLASS = 0x706C7965  # "plye": one erasure per DID at a time (media takes the same lock)
ORIGINS = {"user": "user", "account_deleted": "accountDeleted"}
OUTBOX_BATCH = 100
OUTBOX_POLL_S = 2.0
WAIT_STEP_S = 0.1


async def erase_appview_part(conn: Connection, did: str, origin: str) -> int:
    """Delete the AppView's data of `did` and record the request, in one transaction (a
    savepoint inside the caller's); returns the request id. Media is woken at commit."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1::int, hashtext($2))", LOCK_CLASS, did)
        removed: dict[str, int] = {}
        removed |= await forget_listener(conn, did)
        removed |= await forget_viewer(conn, did)
        removed["reports"] = await forget_reporter(conn, did)
        removed["rateLimitCounts"] = await forget_did(conn, did)
        request_id: int = await conn.fetchval(
            "INSERT INTO erasure_requests (did, origin, appview_receipt) VALUES ($1, $2, $3) RETURNING id",
            did, origin, {"removed": removed},
        )  # fmt: skip
        await conn.execute("SELECT pg_notify($1, $2)", ERASURE_CHANNEL, str(request_id))
    log.info("account data erased (appview part)",
             extra={"did": did, "request": request_id, "origin": origin, "removed": removed})  # fmt: skip
    return request_id


_RECEIPT = """
SELECT r.id, r.did, r.origin, r.requested_at, r.appview_receipt,
       p.status AS media_status, p.receipt AS media_receipt, p.finished_at AS media_finished_at
FROM erasure_requests r LEFT JOIN erasure_media_parts p ON p.request_id = r.id
"""


def _counts(mapping: Any) -> list[dict[str, Any]]:
    return [{"kind": kind, "count": int(n)} for kind, n in sorted((mapping or {}).items())]


def receipt_view(row: asyncpg.Record) -> dict[str, Any]:
    """fm.plyr.actor.deleteAccountData#receipt of a request row joined with media's part."""
    appview = _json(row["appview_receipt"])
    parts: list[dict[str, Any]] = [{"service": "appview", "status": "done", "removed": _counts(appview.get("removed"))}]
    total = sum(appview.get("removed", {}).values())
    media: dict[str, Any] = {"service": "media", "status": row["media_status"] or "pending", "removed": []}
    if row["media_receipt"] is not None:
        receipt = _json(row["media_receipt"])
        media["removed"] = _counts(receipt.get("removed"))
        media["kept"] = _counts(receipt.get("kept"))
        media["storageKeys"] = list(receipt.get("storageKeys", []))
        total += sum(receipt.get("removed", {}).values())
    if row["media_finished_at"] is not None:
        media["finishedAt"] = iso(row["media_finished_at"])
    parts.append(media)
    done = media["status"] == "done"
    if not done:
        message = (f"media's part is {media['status']}: read this receipt again later "
                   f"(fm.plyr.actor.getAccountDataDeletion?request={row['id']})")  # fmt: skip
    elif total == 0:
        message = "nothing more to remove: no data of this account was held beyond its repo"
    else:
        message = f"removed {total} items held beyond the account's repo"
    return {
        "request": row["id"],
        "did": row["did"],
        "origin": ORIGINS[row["origin"]],
        "requestedAt": iso(row["requested_at"]),
        "status": "done" if done else "pending",
        "removedTotal": total,
        "message": message,
        "parts": parts,
    }


def _json(value: Any) -> dict[str, Any]:
    data = orjson.loads(value) if isinstance(value, str | bytes) else value
    return data if isinstance(data, dict) else {}


async def read_receipt(pool: Any, request_id: int) -> dict[str, Any] | None:
    row = await pool.fetchrow(_RECEIPT + " WHERE r.id = $1", request_id)
    return receipt_view(row) if row is not None else None


async def wait_for_parts(pool: Any, request_id: int, within_s: float) -> dict[str, Any]:
    """The receipt once every part is done, or as it stands after `within_s` seconds."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        receipt = await read_receipt(pool, request_id)
        assert receipt is not None  # the request was committed before
        if receipt["status"] == "done" or asyncio.get_running_loop().time() >= deadline:
            return receipt
        await asyncio.sleep(WAIT_STEP_S)


async def delete_account_data(call: Call) -> dict[str, Any]:
    did = call.viewer
    assert did is not None  # the route requires auth: the caller's own DID, nobody else's
    async with call.pool.acquire() as conn:
        request_id = await erase_appview_part(conn, did, "user")
    return await wait_for_parts(call.pool, request_id, call.state.settings.erasure_wait_seconds)


async def get_account_data_deletion(call: Call) -> dict[str, Any]:
    did = call.viewer
    request_id = call.params.get("request")
    if request_id is None:
        row = await call.pool.fetchrow(_RECEIPT + " WHERE r.did = $1 ORDER BY r.id DESC LIMIT 1", did)
    else:
        row = await call.pool.fetchrow(_RECEIPT + " WHERE r.id = $1 AND r.did = $2", request_id, did)
    if row is None:
        raise not_found("no data deletion request of this account" + ("" if request_id is None else f" with id {request_id}"))
    return receipt_view(row)


# ---- requests the AppView did not start: deleted accounts (the indexer's outbox) ----------------

_TAKE = """
DELETE FROM erasure_outbox
WHERE id IN (SELECT id FROM erasure_outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, did
"""


async def take_outbox(pool: asyncpg.Pool, *, batch: int = OUTBOX_BATCH) -> list[int]:
    """Turn up to `batch` outbox rows into requests, the AppView's part done, in one
    transaction (a crash leaves the rows for the next taker); returns the request ids."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_TAKE, batch)
        dids = list(dict.fromkeys(r["did"] for r in sorted(rows, key=lambda r: r["id"])))
        return [await erase_appview_part(conn, did, "account_deleted") for did in dids]


async def take_all(pool: asyncpg.Pool) -> list[int]:
    taken: list[int] = []
    while batch := await take_outbox(pool):
        taken += batch
    return taken


async def consume_forever(pool: asyncpg.Pool, *, poll_s: float = OUTBOX_POLL_S) -> None:
    """Every `poll_s` seconds, the deleted accounts' requests the indexer queued (any number
    of AppView processes may run this: SKIP LOCKED)."""
    while True:
        try:
            await take_all(pool)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("taking erasure requests from the outbox failed")
        await asyncio.sleep(poll_s)


@contextlib.asynccontextmanager
async def consuming(pool: asyncpg.Pool) -> AsyncIterator[asyncio.Task[None]]:
    """`consume_forever` in the background for the duration of the block."""
    task = asyncio.create_task(consume_forever(pool), name="appview-erasure-outbox")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


ROUTES: dict[str, Route] = {
    "fm.plyr.actor.deleteAccountData": Route(delete_account_data, auth="required"),
    "fm.plyr.actor.getAccountDataDeletion": Route(get_account_data_deletion, auth="required"),
}
