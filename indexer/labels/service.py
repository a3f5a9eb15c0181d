"""Running the label subscriber: one Subscriber per configured labeler and the takedown sweep.

`run(rt)` is the entry point of `plyr up` (service "labels"); `plyr labels` calls `run_labels`
with its options. One process at a time subscribes (a session advisory lock, as the indexer's
stream lock: indexer/ha.py); others wait as standbys, and label cursors are fenced like the
indexer's. Without labelers the service only lifts takedowns left by labelers no longer
trusted, then idles (a service that returned would stop `plyr up`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import asyncpg

from core.backoff import Backoff
from core.errors import DatabaseError
from core.logging import get_logger
from core.runtime import Runtime
from core.settings import LabelSettings
from indexer.ha import LeadershipLost, run_as_leader
from indexer.labels.stream import HEARTBEAT
from indexer.labels.subscriber import Subscriber
from indexer.labels.sweep import TakedownSweeper
from indexer.writer import CursorConflict

log = get_logger("plyr.labels")

LOCK_NAME = "labels"


# Tests see the tasks they wait on (connections, cursors, sweeps) through this hook.
OnStart = Callable[[list[Subscriber], TakedownSweeper], None]


async def subscribe_all(
    rt: Runtime, session: aiohttp.ClientSession, settings: LabelSettings, *, heartbeat: float = HEARTBEAT,
    on_start: OnStart | None = None,
) -> None:  # fmt: skip
    """Follow every labeler and sweep expired takedowns until cancelled or a task fails."""
    moderation = frozenset(settings.moderation_labelers)
    sweeper = TakedownSweeper(rt.pool, moderation)
    subscribers = [
        Subscriber(rt.pool, session, rt.identity, did, moderation=moderation,
                   on_takedown_expiry=sweeper.poke.set, heartbeat=heartbeat)
        for did in settings.labelers
    ]  # fmt: skip
    if on_start is not None:
        on_start(subscribers, sweeper)
    tasks = [asyncio.create_task(s.run(), name=f"labels:{s.did}") for s in subscribers]
    tasks.append(asyncio.create_task(sweeper.run(), name="labels:sweep"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # CursorConflict, or a bug: the supervisor restarts
        raise RuntimeError("a label task ended on its own")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_labels(
    rt: Runtime, settings: LabelSettings, *, standby_poll: float = 1.0, heartbeat: float = HEARTBEAT,
    on_start: OnStart | None = None,
) -> None:  # fmt: skip
    """Subscribe to `settings.labelers` until cancelled; restarts (as a standby first) after a
    lost lock, a moved cursor or a database failure."""
    unsubscribed = sorted(set(settings.moderation_labelers) - set(settings.labelers))
    if unsubscribed:
        log.warning(
            "moderation labelers that are not subscribed to: their labels never arrive",
            extra={"labelers": ",".join(unsubscribed)},
        )
    if not settings.labelers:
        log.info("label subscriber: no labelers configured (PLYR_LABELERS); not subscribing")
        try:
            await TakedownSweeper(rt.pool, frozenset(settings.moderation_labelers)).sweep_once()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, DatabaseError) as exc:
            log.warning("takedown sweep failed", extra={"error": f"{exc.__class__.__name__}: {exc}"})
        await rt.stopping.wait()
        return
    log.info(
        "label subscriber starting",
        extra={"labelers": ",".join(settings.labelers), "moderation": ",".join(settings.moderation_labelers)},
    )
    backoff = Backoff(base=1.0, cap=60.0)
    session = rt.http  # the runtime's guarded session (core/net.py)
    while True:
        try:
            await run_as_leader(
                rt.database_url, LOCK_NAME,
                lambda: subscribe_all(rt, session, settings, heartbeat=heartbeat, on_start=on_start),
                poll=standby_poll,
            )  # fmt: skip
            return
        except (LeadershipLost, CursorConflict, asyncpg.PostgresError, asyncpg.InterfaceError,
                DatabaseError, OSError, RuntimeError) as exc:  # fmt: skip
            delay = backoff.next_delay()
            log.error(
                "label subscriber stopped; restarting from the stored cursors",
                extra={"error": f"{exc.__class__.__name__}: {exc}", "retry_in_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)


async def run(rt: Runtime) -> None:
    """`plyr up`: the labelers from the environment (PLYR_LABELERS, PLYR_MODERATION_LABELERS)."""
    await run_labels(rt, LabelSettings.from_env())
