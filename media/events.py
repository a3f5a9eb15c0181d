"""Job progress for HTTP clients: one LISTEN connection per process, fanned out to subscribers.

media/jobs.py NOTIFYs CHANNEL on every change of a job. The hub keeps one dedicated Postgres
connection listening and hands each notification to the queues of the clients watching that
job. If the connection drops the hub reconnects; clients meanwhile re-read their job on a
timer, so no final state is ever missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

import orjson

from core import db
from core.db import Connection
from media.erasure import ERASURE_CHANNEL
from media.jobs import CHANNEL, NEW_JOB_CHANNEL
from media.mirror_requests import MIRROR_OUTBOX_CHANNEL

log = logging.getLogger("plyr.media.events")


class JobEvents:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.subscribers: dict[int, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self.new_job = asyncio.Event()  # set on every enqueue: wakes idle workers
        self.mirror_requests = asyncio.Event()  # set when the indexer requests mirrors
        self.erasure_requests = asyncio.Event()  # set when the AppView records an erasure request
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="media-events")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.connected.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def subscribe(self, job_id: int) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=100)
        self.subscribers[job_id].add(queue)
        return queue

    def unsubscribe(self, job_id: int, queue: asyncio.Queue[dict[str, Any]]) -> None:
        subs = self.subscribers.get(job_id)
        if subs is not None:
            subs.discard(queue)
            if not subs:
                del self.subscribers[job_id]

    def _on_job(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if not isinstance(payload, str):  # asyncpg hands NOTIFY payloads over as text
            return
        try:
            event = orjson.loads(payload)
            job_id = int(event["id"])
        except (ValueError, KeyError, TypeError):
            return
        for queue in list(self.subscribers.get(job_id, ())):
            if queue.full():  # a slow client only needs the newest state
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    def _on_new_job(self, *_args: object) -> None:
        self.new_job.set()

    def _on_mirror_requests(self, *_args: object) -> None:
        self.mirror_requests.set()

    def _on_erasure_requests(self, *_args: object) -> None:
        self.erasure_requests.set()

    async def _run(self) -> None:
        while True:
            conn: Connection | None = None
            try:
                conn = await db.connect(self.database_url)
                await conn.add_listener(CHANNEL, self._on_job)
                await conn.add_listener(NEW_JOB_CHANNEL, self._on_new_job)
                await conn.add_listener(MIRROR_OUTBOX_CHANNEL, self._on_mirror_requests)
                await conn.add_listener(ERASURE_CHANNEL, self._on_erasure_requests)
                self.connected.set()
                while not conn.is_closed():
                    await asyncio.sleep(5)
                    await conn.execute("SELECT 1")  # notices a dead connection
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job event listener lost its connection", extra={"error": str(exc)})
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(1)
