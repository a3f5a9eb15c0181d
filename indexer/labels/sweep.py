"""Account takedowns that end by themselves: a moderation labeler's `!takedown`/`!suspend` with
an `exp` stops applying when it expires, with no event on the stream to say so.

The sweep compares the accounts that active takedown labels hold down with the actors flagged
`moderation_takedown` and recomputes the ones that differ (under their per-DID locks, as the
subscriber does). It runs at start (which also lifts takedowns by labelers no longer listed in
PLYR_MODERATION_LABELERS), then at the next expiry among those labels, at most `interval`
seconds apart, and when a subscriber stores a takedown label that carries an `exp` (`poke`).
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from core.backoff import Backoff
from core.errors import DatabaseError
from core.logging import get_logger
from indexer.labels import metrics
from indexer.labels.store import recompute_account_takedowns

log = get_logger("plyr.labels")

# Literal values (not parameters): the planner then proves these queries fit the partial index
# labels_removing. Hidden actors are few and indexed (actors_hidden); a takedown hides.
_ACTIVE_TAKEDOWNS = """
SELECT DISTINCT uri FROM labels
WHERE NOT neg AND val IN ('!takedown', '!suspend') AND src = ANY($1::text[])
  AND uri LIKE 'did:%' AND (exp IS NULL OR exp > now())
"""
_CANDIDATES = f"""
WITH want AS ({_ACTIVE_TAKEDOWNS}),
have AS (SELECT did FROM actors WHERE NOT visible AND moderation_takedown)
SELECT uri AS did FROM want WHERE uri NOT IN (SELECT did FROM have)
UNION
SELECT did FROM have WHERE did NOT IN (SELECT uri FROM want)
"""
_NEXT_EXPIRY = """
SELECT extract(epoch FROM min(exp) - now()) FROM labels
WHERE NOT neg AND val IN ('!takedown', '!suspend') AND src = ANY($1::text[])
  AND uri LIKE 'did:%' AND exp > now()
"""
CHUNK = 500  # accounts per transaction


class TakedownSweeper:
    def __init__(self, pool: asyncpg.Pool, moderation: frozenset[str], *, interval: float = 60.0) -> None:
        self.pool = pool
        self.moderation = moderation
        self.interval = interval
        self.poke = asyncio.Event()
        self.sweeps = 0  # completed sweeps (tests wait on it)

    async def sweep_once(self) -> tuple[dict[str, str], float | None]:
        """Recompute the accounts whose flag disagrees with the labels; returns the changes and
        the seconds until the next takedown label expires (None: none will)."""
        mods = sorted(self.moderation)
        changes: dict[str, str] = {}
        async with self.pool.acquire() as conn:
            dids = [r["did"] for r in await conn.fetch(_CANDIDATES, mods)]
            for start in range(0, len(dids), CHUNK):
                async with conn.transaction():
                    changes.update(
                        await recompute_account_takedowns(conn, set(dids[start : start + CHUNK]), self.moderation)
                    )
            next_in = await conn.fetchval(_NEXT_EXPIRY, mods)
        for did, outcome in changes.items():
            metrics.ACCOUNT_TAKEDOWNS.labels("taken down" if outcome.startswith("taken") else "restored").inc()
            log.info("account takedown swept", extra={"did": did, "outcome": outcome})
        self.sweeps += 1
        return changes, float(next_in) if next_in is not None else None

    async def run(self) -> None:
        backoff = Backoff(base=1.0, cap=60.0)
        while True:
            self.poke.clear()  # before the sweep: a poke during it asks for another one
            try:
                _, next_in = await self.sweep_once()
                backoff.reset()
                wait = self.interval if next_in is None else min(self.interval, max(next_in, 0) + 0.05)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, DatabaseError) as exc:
                wait = backoff.next_delay()
                log.warning(
                    "takedown sweep failed; retrying",
                    extra={"error": f"{exc.__class__.__name__}: {exc}", "retry_in_s": round(wait, 2)},
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.poke.wait()
