"""The consumer loop: frames -> decode (filter first) -> verify -> batch -> writer.

One `Consumer` drives one source. Per frame it calls the decoder (which returns None for the
~99.9% of frames that do not concern us); events that matter are handled in stream order:

- `#commit` and `#sync`: the repos we index are followed, their commits verified into record
  ops for the batch (indexer/repo_follow.py).
- `#identity`: the cached DID document is dropped; for indexed actors a handle check is
  requested with the batch (same transaction as the cursor), and `indexer/handles.py` looks it
  up in the background (new actors want one too).
- `#account` for an indexed actor: the batch so far is written, then the status change with
  the cursor at that event.
- `#info OutdatedCursor` and the `FutureCursor` error mean events were (or may have been) lost:
  every indexed repo is marked for resync.

Batches close at `batch_size` ops or `batch_delay` seconds after they opened (a timer task
closes them on a quiet stream too), so the cursor is never more than about a second behind.
Each batch is one writer transaction: rows, counts, dead letters and the cursor together.

Writes are pipelined: a full batch is cut (indexer/batching.py: ops, dead letters and the
cursor seq together) and written by a task while decoding goes on; at most one write is in
flight, and every write (batch or account change) is chained after the previous one, so they
commit in stream order; after a failed write no later one runs (indexer/write_chain.py).
Counters, metrics and the status line: indexer/consumer_status.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from core.logging import get_logger
from indexer import crashpoints
from indexer.batching import Batch, OpenBatch, parse_event_time
from indexer.consumer_status import Position, Stats, StatusReporter
from indexer.crashpoints import ARMED as _CRASH_ARMED
from indexer.frames import (
    AccountEvent,
    BadFrame,
    CommitEvent,
    Duplicate,
    ErrorFrame,
    FrameDecoder,
    IdentityEvent,
    InfoEvent,
    JetstreamDecoder,
    SyncEvent,
)
from indexer.handles import HandleChecker
from indexer.repo_follow import RepoFollower
from indexer.sources import CaptureUnreadable, Source
from indexer.verify import Verifier
from indexer.write_chain import WriteChain
from indexer.writer import (
    AccountChange,
    CursorUpdate,
    apply_account,
    apply_batch,
    read_cursor,
    write_cursor,
)

if TYPE_CHECKING:  # importing identity would pull in aiohttp
    from protocol.identity import IdentityResolving

# get_logger: extra fields can never collide with LogRecord attributes (core/logging.py).
log = get_logger("plyr.indexer")


class Consumer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        source: Source,
        *,
        lexicons: Any,
        verifier: Verifier,
        resolver: IdentityResolving | None = None,
        batch_size: int = 1000,
        batch_delay: float = 0.3,
        start_cursor: int | None = None,
        status_interval: float = 5.0,
    ) -> None:
        self.pool = pool
        self.source = source
        self.lexicons = lexicons
        self.verifier = verifier
        self.batch_size = batch_size
        self.batch_delay = batch_delay
        self.start_cursor = start_cursor
        self.status_interval = status_interval
        self.stats = Stats()
        self.committed: int | None = None  # the seq stored in `cursors` (our fence)
        self.committed_time: datetime | None = None
        # DIDs we index -> newest known rev: one dict, shared by the decoder and the follower.
        self.watched: dict[str, str | None] = {}
        self.decoder: FrameDecoder | JetstreamDecoder = FrameDecoder(None, self.watched)
        self.batch = OpenBatch()
        self.writes = WriteChain()
        self.repos = RepoFollower(verifier, self.watched, self.batch, self.stats)
        self.status = StatusReporter(source.name, self.stats, self._position)
        self.handles = HandleChecker(pool, resolver) if resolver is not None else None
        self.done = asyncio.Event()

    # ---- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until the source ends (capture files) or the task is cancelled."""
        stored = await read_cursor(self.pool, self.source.name)
        self.committed = stored
        start = self.start_cursor if self.start_cursor is not None else stored
        if self.start_cursor is not None and self.start_cursor != stored:
            await self._store_start_cursor(stored)
        rows = await self.pool.fetch("SELECT did, repo_rev FROM actors")
        self.watched.clear()
        self.watched.update((r["did"], r["repo_rev"]) for r in rows)
        decoder_cls = JetstreamDecoder if self.source.format == "jetstream" else FrameDecoder
        self.decoder = decoder_cls(start, self.watched)
        if self.source.format == "jetstream":
            log.warning(
                "Jetstream source: records cannot be verified (no signatures or blocks); "
                "trusting the Jetstream operator",
                extra={"source": self.source.name},
            )
        log.info(
            "consuming",
            extra={"source": self.source.name, "cursor": start, "watched_repos": len(self.watched)},
        )
        if self.handles is not None:
            self.handles.start()  # also the checks a previous run requested and did not finish
        timer = asyncio.create_task(self._batch_timer())
        status = asyncio.create_task(self.status.run(self.status_interval))
        consume = asyncio.create_task(self._consume_all())
        try:
            # The timer never ends on its own: if it is done, a write failed there.
            done, _ = await asyncio.wait({consume, timer}, return_when=asyncio.FIRST_COMPLETED)
            if consume not in done:
                consume.cancel()
                await asyncio.gather(consume, return_exceptions=True)
                timer.result()
            consume.result()
            if self.handles is not None:  # lookups requested by the last batches
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await self.handles.wait_idle()
            self.done.set()
        finally:
            consume.cancel()
            timer.cancel()
            status.cancel()
            await asyncio.gather(consume, timer, status, return_exceptions=True)
            if self.handles is not None:
                await self.handles.close()
            self.status.publish()
            self.status.log(final=True)

    async def _store_start_cursor(self, stored: int | None) -> None:
        """Persist a requested start cursor before consuming anything, so a crash before the
        first batch commits resumes there too (not at the live tip, losing events).

        Runs under the stream lock (live sources) and is fenced like a batch: if another
        consumer moved the cursor since we read it, CursorConflict.
        """
        assert self.start_cursor is not None
        async with self.pool.acquire() as conn, conn.transaction():
            await write_cursor(
                conn, CursorUpdate(self.source.name, self.start_cursor, None, expected=stored)
            )
        self.committed = self.start_cursor
        log.info(
            "start cursor stored",
            extra={"source": self.source.name, "cursor": self.start_cursor, "was": stored},
        )

    def _resume_cursor(self) -> int | None:
        seq = self.decoder.last_seq
        return seq if seq >= 0 else None

    def _position(self) -> Position:
        d = self.decoder
        return Position(d.frames, d.last_seq, self.committed, self.committed_time)

    async def _consume_all(self) -> None:
        try:
            await self._consume()
        except CaptureUnreadable:
            # The frames before the damage were read whole: commit them, then report it.
            await self.flush()
            raise
        await self.flush()  # end of a capture: commit everything (after any write in flight)

    async def _consume(self) -> None:
        decode = self.decoder.decode
        handle = self._handle
        follow = self.repos.follow
        batch, writes = self.batch, self.writes
        clock = time.monotonic
        async for chunk in self.source.batches(self._resume_cursor):
            for raw in chunk:
                ev = decode(raw)
                if ev is not None:
                    # Commits needing no verification (most: repos we index, no plyr ops) are
                    # handled inline, without a coroutine, and do not yield.
                    if type(ev) is CommitEvent and follow(ev):
                        if len(batch.ops) >= self.batch_size:
                            await self._flush_soon()
                        continue
                    await handle(ev)
                    if len(batch.ops) >= self.batch_size:
                        await self._flush_soon()
                    elif writes.in_flight():
                        # Decoding is CPU-bound: let the write in flight take its next round
                        # trip, or every one of them waits for a whole chunk of frames.
                        await asyncio.sleep(0)
            if batch.opened is None:
                batch.opened = clock()
            elif clock() - batch.opened >= self.batch_delay:
                await self._flush_soon()

    async def _batch_timer(self) -> None:
        """Close batches on a quiet stream too (the main loop only checks between messages)."""
        while True:
            await asyncio.sleep(self.batch_delay / 2)
            if self.batch.is_due(self.batch_delay):
                await self._flush_soon()

    # ---- events -------------------------------------------------------------------------------

    async def _handle(self, ev: Any) -> None:
        if isinstance(ev, CommitEvent):
            await self.repos.on_commit(ev)
        elif isinstance(ev, Duplicate):
            self.stats.duplicates += 1
        elif isinstance(ev, BadFrame):
            self.stats.count("bad")
            self.stats.bad_frames += 1
            log.warning("bad frame", extra={"seq": ev.seq, "reason": ev.reason, "bytes": len(ev.frame)})
        elif isinstance(ev, IdentityEvent):
            self.stats.count("identity")
            self.verifier.invalidate(ev.did)
            if ev.did in self.watched:
                self.batch.handle_checks.add(ev.did)
        elif isinstance(ev, AccountEvent):
            self.stats.count("account")
            # Inactive statuses are stored even for DIDs we have not indexed yet: a backfill
            # may write their records later, and those must stay hidden.
            if ev.did in self.watched or not ev.active:
                await self._on_account(ev)
        elif isinstance(ev, SyncEvent):
            self.stats.count("sync")
            if ev.did in self.watched:
                await self.repos.on_sync(ev)
        elif isinstance(ev, InfoEvent):
            self.stats.count("info")
            if ev.name == "OutdatedCursor":
                log.warning(
                    "relay says our cursor is older than its window: events were missed; "
                    "marking indexed repos for resync",
                    extra={"source": self.source.name, "detail": ev.message},
                )
                self.repos.mark_all_resync("OutdatedCursor: relay skipped events")
            else:
                # `info_name`: the relay chooses it; `name` is a LogRecord attribute.
                log.info("relay info", extra={"info_name": ev.name, "detail": ev.message})
        elif isinstance(ev, ErrorFrame):
            self.stats.count("error")
            await self._on_error_frame(ev)

    async def _on_account(self, ev: AccountEvent) -> None:
        # Batches cut meanwhile (the timer) stop below this event.
        with self.batch.holding(ev.seq):
            # Everything before this event goes first, with the cursor just below it.
            await self.flush(upto=ev.seq - 1)
            await self.writes.run(self._write_account(ev))

    async def _on_error_frame(self, ev: ErrorFrame) -> None:
        if ev.error == "FutureCursor":
            log.error(
                "relay says our cursor is in its future (it lost data or reset its sequence): "
                "resuming from its live tip and marking indexed repos for resync",
                extra={"source": self.source.name, "cursor": self.decoder.last_seq, "detail": ev.message},
            )
            self.repos.mark_all_resync("FutureCursor: relay sequence reset")
            await self.flush()
            # Accept the relay's new numbering: the next (re)connect starts at the live tip.
            self.decoder.last_seq = -1
        elif ev.error == "ConsumerTooSlow":
            log.warning("relay says we are too slow; it will drop us, we resume from the cursor",
                        extra={"detail": ev.message})
        else:
            log.warning("relay error frame", extra={"error": ev.error, "detail": ev.message})

    # ---- writes -------------------------------------------------------------------------------

    def _cut(self, upto: int | None = None) -> Batch | None:
        d = self.decoder
        return self.batch.cut(upto=upto, last_seq=d.last_seq, last_time=d.last_time, committed=self.committed)

    async def flush(self, upto: int | None = None) -> None:
        """Write the open batch now, after every write scheduled before it; failures raise."""
        batch = self._cut(upto)
        if batch is not None:
            await self.writes.run(self._write(batch))
        else:
            await self.writes.wait()

    async def _flush_soon(self) -> None:
        """Write the open batch in the background; wait only if a write is already in flight."""
        if self.writes.in_flight():
            await self.writes.wait()  # backpressure: at most one write in flight
        batch = self._cut()
        if batch is not None:
            self.writes.schedule(self._write(batch))
        else:
            self.writes.raise_if_failed()

    async def _write(self, batch: Batch) -> None:
        self.writes.check()
        cursor = CursorUpdate(self.source.name, batch.seq, batch.event_time, expected=self.committed)
        try:
            async with self.pool.acquire() as conn:
                result = await apply_batch(
                    conn, batch.ops, lexicons=self.lexicons, cursor=cursor, source=self.source.name,
                    dead_letters=batch.letters, repo_revs=batch.revs, resync=batch.resync,
                    handle_checks=batch.handle_checks,
                )  # fmt: skip
            if _CRASH_ARMED:
                crashpoints.hit("after_commit_before_ack")
        except BaseException as exc:
            self.writes.failed = exc
            raise
        self.committed = batch.seq
        if batch.event_time is not None:
            self.committed_time = batch.event_time
        s = self.stats
        s.batches += 1
        s.written += result.applied
        s.stale += result.stale
        s.dead_letters += result.dead_letters
        for did in result.new_dids:
            self.watched.setdefault(did, None)
        if self.handles is not None and (batch.handle_checks or result.new_dids):
            self.handles.poke()  # new actors want a check (column default), and these were asked
        if result.invalid:
            log.warning("records dead-lettered", extra={"count": result.invalid, "seq": batch.seq})

    async def _write_account(self, ev: AccountEvent) -> None:
        self.writes.check()
        event_time = parse_event_time(ev.time)
        cursor = CursorUpdate(self.source.name, ev.seq, event_time, expected=self.committed)
        try:
            async with self.pool.acquire() as conn:
                outcome = await apply_account(
                    conn, AccountChange(ev.did, ev.active, ev.status, ev.seq), cursor=cursor
                )
            if _CRASH_ARMED:
                crashpoints.hit("account_after_commit")
        except BaseException as exc:
            self.writes.failed = exc
            raise
        self.committed = ev.seq
        log.info(
            "account status",
            extra={"did": ev.did, "active": ev.active, "status": ev.status, "outcome": outcome},
        )
