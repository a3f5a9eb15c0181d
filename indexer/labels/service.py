"""Running the label subscriber: one Subscriber per configured labeler and the takedown sweep.

`run(rt)` is the entry point of `plyr up` (service "labels"); `plyr labels` calls `run_labels`
with its options. One process at a time subscribes (a session advisory lock, as the indexer's
stream lock: indexer/ha.py); others wait as standbys, and label cursors are fenced like the
indexer's. Without labelers the service only lifts takedowns left by labelers no longer
trusted, then idles (a service that returned would stop `plyr up`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp
import asyncpg

from core.backoff import Backoff
from core.errors import DatabaseError
from core.logging import get_logger
from core.runtime import Runtime
from core.settings import LabelSettings
from indexer.ha import LeadershipLost, run_as_leader
from indexer.labels.keys import KnownLabeler
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
    on_start: OnStart | None = None, known: dict[str, KnownLabeler] | None = None,
    local_session: aiohttp.ClientSession | None = None,
) -> None:  # fmt: skip
    """Follow every labeler and sweep expired takedowns until cancelled or a task fails.
    `known` labelers are reached on their configured endpoint through `local_session` (not
    guarded: the address comes from our configuration, not from network data)."""
    known = known or {}
    moderation = frozenset(settings.moderation_labelers)
    sweeper = TakedownSweeper(rt.pool, moderation)
    subscribers = [
        Subscriber(rt.pool, (local_session or session) if did in known else session, rt.identity, did,
                   moderation=moderation, on_takedown_expiry=sweeper.poke.set, heartbeat=heartbeat,
                   known=known.get(did))
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
    on_start: OnStart | None = None, known: KnownLabeler | None = None,
) -> None:  # fmt: skip
    """Subscribe to `settings.labelers` until cancelled; restarts (as a standby first) after a
    lost lock, a moved cursor or a database failure. `known`: a labeler reached on a configured
    endpoint with a configured key (our own, under `plyr up`), added to the lists."""
    if known is not None:
        settings = settings.including(known.did)
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
    async with contextlib.AsyncExitStack() as stack:
        local_session = None
        if known is not None:
            local_session = await stack.enter_async_context(aiohttp.ClientSession())
        await _supervise(rt, settings, session, backoff, standby_poll=standby_poll, heartbeat=heartbeat,
                         on_start=on_start, known={known.did: known} if known else {}, local_session=local_session)


async def _supervise(
    rt: Runtime, settings: LabelSettings, session: aiohttp.ClientSession, backoff: Backoff, *,
    standby_poll: float, heartbeat: float, on_start: OnStart | None, known: dict[str, KnownLabeler],
    local_session: aiohttp.ClientSession | None,
) -> None:  # fmt: skip
    while True:
        try:
            await run_as_leader(
                rt.database_url, LOCK_NAME,
                lambda: subscribe_all(rt, session, settings, heartbeat=heartbeat, on_start=on_start,
                                      known=known, local_session=local_session),
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


async def run(rt: Runtime, known: KnownLabeler | None = None) -> None:
    """`plyr up`: the labelers from the environment (PLYR_LABELERS, PLYR_MODERATION_LABELERS),
    and our own AppView's labeler when `plyr/services.py` passes it."""
    await run_labels(rt, LabelSettings.from_env(), known=known)
