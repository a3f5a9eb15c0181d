"""The consumer loop: frames -> decode (filter first) -> verify -> batch -> writer.

One `Consumer` drives one source. Per frame it calls the decoder (which returns None for the
~99.9% of frames that do not concern us); events that matter are handled in stream order:

- `#commit` with fm.plyr.* ops: verified (rev not in the future, CIDs, signature, MST
  inversion against `prevData`; see indexer/verify.py) into RecordOps, added to the batch;
  failures become dead letters (with the raw frame) and the stream goes on; a failed inversion
  or a missing/corrupt block also marks the repo for resync. Repos we index are followed on every commit: a `since` that
  does not match the rev we hold, or a `tooBig` commit, marks the repo for resync (the backfill
  fetches it). A commit whose rev is in the future is rejected before its rev is tracked.
- `#identity`: the cached DID document is dropped; for indexed actors a handle check is
  requested with the batch (same transaction as the cursor), and `indexer/handles.py` looks it
  up in the background (new actors want one too).
- `#account` for an indexed actor: the batch so far is written, then the status change with
  the cursor at that event.
- `#sync` of an indexed repo: ignored when its rev is not newer than the one we hold (spec);
  otherwise its signed commit is verified and only then is the repo marked for resync (a
  `#sync` that fails is counted and ignored).
- `#info OutdatedCursor` and the `FutureCursor` error mean events were (or may have been) lost:
  every indexed repo is marked for resync.

Batches close at `batch_size` ops or `batch_delay` seconds after they opened (a timer task
closes them on a quiet stream too), so the cursor is never more than about a second behind.
Each batch is one writer transaction: rows, counts, dead letters and the cursor together.

Writes are pipelined: a full batch is cut (synchronously: ops, dead letters and the cursor seq
together) and written by a task while decoding goes on; at most one write is in flight, and
every write (batch or account change) is chained after the previous one, so they commit in
stream order; after a failed write no later one runs. While a matched commit is being verified (an await), its seq
is `_inflight`, and a batch cut meanwhile stops just below it: the cursor never passes an event
whose ops are not in a batch yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from core.logging import get_logger
from indexer import crashpoints, metrics
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
from indexer.records import RecordOp
from indexer.sources import CaptureUnreadable, Source
from indexer.verify import Verifier, VerifyError, check_rev
from indexer.writer import (
    AccountChange,
    CursorUpdate,
    DeadLetter,
    apply_account,
    apply_batch,
    read_cursor,
    write_cursor,
)
from protocol.syntax import InvalidSyntax, parse_datetime

if TYPE_CHECKING:  # importing identity would pull in aiohttp
    from protocol.identity import IdentityResolving

# get_logger: extra fields can never collide with LogRecord attributes (core/logging.py).
log = get_logger("plyr.indexer")

# Verification failures after which the stream cannot give us the repo's state back.
_RESYNC_ON = frozenset({"inversion", "car"})


@dataclass
class Stats:
    frames: int = 0
    matched_ops: int = 0
    written: int = 0
    stale: int = 0
    dead_letters: int = 0
    bad_frames: int = 0
    duplicates: int = 0
    verify_failures: int = 0
    batches: int = 0
    resync_marks: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


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
        self.decoder: FrameDecoder | JetstreamDecoder = FrameDecoder()
        self._inflight: int | None = None  # seq of the event being verified
        self._write_task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None  # a batch write that failed: no more writes
        self._ops: list[RecordOp] = []
        self._letters: list[DeadLetter] = []
        self._revs: dict[str, str] = {}
        self._resync: dict[str, str] = {}
        self._opened: float | None = None  # monotonic time the open batch started
        self._handle_checks: set[str] = set()
        self.handles = HandleChecker(pool, resolver) if resolver is not None else None
        self._published = Stats()
        self.done = asyncio.Event()

    # ---- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until the source ends (capture files) or the task is cancelled."""
        stored = await read_cursor(self.pool, self.source.name)
        self.committed = stored
        start = self.start_cursor if self.start_cursor is not None else stored
        if self.start_cursor is not None and self.start_cursor != stored:
            await self._store_start_cursor(stored)
        watched = {
            r["did"]: r["repo_rev"] for r in await self.pool.fetch("SELECT did, repo_rev FROM actors")
        }
        decoder_cls = JetstreamDecoder if self.source.format == "jetstream" else FrameDecoder
        self.decoder = decoder_cls(start, watched)
        if self.source.format == "jetstream":
            log.warning(
                "Jetstream source: records cannot be verified (no signatures or blocks); "
                "trusting the Jetstream operator",
                extra={"source": self.source.name},
            )
        log.info(
            "consuming",
            extra={"source": self.source.name, "cursor": start, "watched_repos": len(watched)},
        )
        if self.handles is not None:
            self.handles.start()  # also the checks a previous run requested and did not finish
        timer = asyncio.create_task(self._batch_timer())
        status = asyncio.create_task(self._status_loop())
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
            self._publish_metrics()
            self._log_status(final=True)

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
        clock = time.monotonic
        async for batch in self.source.batches(self._resume_cursor):
            for raw in batch:
                ev = decode(raw)
                if ev is not None:
                    await handle(ev)
                    if len(self._ops) >= self.batch_size:
                        await self._flush_soon()
                    elif self._write_task is not None and not self._write_task.done():
                        # Decoding is CPU-bound: let the write in flight take its next round
                        # trip, or every one of them waits for a whole chunk of frames.
                        await asyncio.sleep(0)
            if self._opened is None:
                self._opened = clock()
            elif clock() - self._opened >= self.batch_delay:
                await self._flush_soon()

    async def _batch_timer(self) -> None:
        """Close batches on a quiet stream too (the main loop only checks between messages)."""
        while True:
            await asyncio.sleep(self.batch_delay / 2)
            opened = self._opened
            if opened is not None and time.monotonic() - opened >= self.batch_delay:
                await self._flush_soon()

    # ---- events -------------------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        self.stats.by_type[kind] = self.stats.by_type.get(kind, 0) + 1

    async def _handle(self, ev: Any) -> None:
        if isinstance(ev, CommitEvent):
            await self._on_commit(ev)
        elif isinstance(ev, Duplicate):
            self.stats.duplicates += 1
        elif isinstance(ev, BadFrame):
            self._count("bad")
            self.stats.bad_frames += 1
            log.warning("bad frame", extra={"seq": ev.seq, "reason": ev.reason, "bytes": len(ev.frame)})
        elif isinstance(ev, IdentityEvent):
            self._count("identity")
            self.verifier.invalidate(ev.did)
            if ev.did in self.decoder.watched:
                self._handle_checks.add(ev.did)
        elif isinstance(ev, AccountEvent):
            self._count("account")
            # Inactive statuses are stored even for DIDs we have not indexed yet: a backfill
            # may write their records later, and those must stay hidden.
            if ev.did in self.decoder.watched or not ev.active:
                await self._on_account(ev)
        elif isinstance(ev, SyncEvent):
            self._count("sync")
            if ev.did in self.decoder.watched:
                await self._on_sync(ev)
        elif isinstance(ev, InfoEvent):
            self._count("info")
            if ev.name == "OutdatedCursor":
                log.warning(
                    "relay says our cursor is older than its window: events were missed; "
                    "marking indexed repos for resync",
                    extra={"source": self.source.name, "detail": ev.message},
                )
                self._mark_all_resync("OutdatedCursor: relay skipped events")
            else:
                # `info_name`: the relay chooses it; `name` is a LogRecord attribute.
                log.info("relay info", extra={"info_name": ev.name, "detail": ev.message})
        elif isinstance(ev, ErrorFrame):
            self._count("error")
            await self._on_error_frame(ev)

    async def _on_commit(self, ev: CommitEvent) -> None:
        did = ev.repo
        try:
            # Before the rev is tracked: a far-future rev would stall the repo's rev chain.
            check_rev(ev.rev)
        except VerifyError as exc:
            self._reject_commit(ev, exc)
            return
        if ev.too_big:
            self._track_rev(ev)
            self._mark_resync(did, f"tooBig commit at seq {ev.seq}")
            return
        if ev.records is not None:  # Jetstream: no blocks, nothing to verify
            self._track_rev(ev, start=True)
            self._add_ops(ev.records)
            return
        if not ev.ops:
            # A commit of a repo we index without plyr ops: followed for its rev, not verified.
            self._track_rev(ev)
            return
        self._inflight = ev.seq
        try:
            try:
                ops = await self.verifier.commit_ops(ev)
            except VerifyError as exc:
                # Its rev is not tracked either: the next commit's `since` then shows the gap.
                self._reject_commit(ev, exc)
                if exc.kind in _RESYNC_ON:
                    # A diff whose ops do not add up (inversion) or whose blocks are missing or
                    # corrupt (car): replaying the same bytes cannot help, so the repo is fetched
                    # whole from its PDS.
                    self._mark_resync(did, f"commit at seq {ev.seq} failed verification ({exc.kind}): {exc}")
                return
            self._track_rev(ev, start=True)
            self._add_ops(ops)
        finally:
            self._inflight = None

    def _track_rev(self, ev: CommitEvent, *, start: bool = False) -> None:
        """Follow the repo's newest rev (and see gaps: a `since` that is not the rev we hold).

        `start`: also begin following a repo not watched yet (its first plyr commit)."""
        did, watched = ev.repo, self.decoder.watched
        if did not in watched:
            if start:
                watched[did] = ev.rev
                self._revs[did] = ev.rev
            return
        known = watched[did]
        if known is None or ev.rev > known:
            if known is not None and ev.since is not None and ev.since != known:
                self._mark_resync(did, f"commit at seq {ev.seq} has since={ev.since}, we hold rev {known}")
            watched[did] = ev.rev
            self._revs[did] = ev.rev

    def _reject_commit(self, ev: CommitEvent, exc: VerifyError) -> None:
        """Count a commit that failed verification and keep it as a dead letter; nothing of it
        is applied."""
        self.stats.verify_failures += 1
        metrics.VERIFY_FAILURES.labels(exc.kind).inc()
        log.warning(
            "commit failed verification",
            extra={"seq": ev.seq, "did": ev.repo, "kind": exc.kind, "reason": str(exc)},
        )
        raw = ev.frame or None  # Jetstream events carry no frame
        self._letters.append(
            DeadLetter(reason=f"{exc.kind}: {exc}", seq=ev.seq, did=ev.repo, rev=ev.rev, raw=raw)
        )

    async def _on_sync(self, ev: SyncEvent) -> None:
        known = self.decoder.watched.get(ev.did)
        if ev.rev is not None and known is not None and ev.rev <= known:
            # Sync spec: #sync events with a rev not above the last one processed are ignored.
            log.info(
                "stale #sync ignored",
                extra={"seq": ev.seq, "did": ev.did, "rev": ev.rev, "known": known},
            )
            return
        # Batches cut while the commit is verified (an await) stop below this event.
        self._inflight = ev.seq
        try:
            await self.verifier.sync_commit(ev)
        except VerifyError as exc:
            # Not trusted, so it causes no work; no dead letter either (nothing to replay).
            self.stats.verify_failures += 1
            metrics.VERIFY_FAILURES.labels(f"sync_{exc.kind}").inc()
            log.warning(
                "#sync failed verification; ignored",
                extra={"seq": ev.seq, "did": ev.did, "kind": exc.kind, "reason": str(exc)},
            )
            return
        finally:
            self._inflight = None
        self._mark_resync(ev.did, f"#sync event at seq {ev.seq}")
        if ev.rev:
            self.decoder.watched[ev.did] = ev.rev

    def _add_ops(self, ops: list[RecordOp]) -> None:
        self.stats.matched_ops += len(ops)
        self._ops.extend(ops)
        if self._opened is None:
            self._opened = time.monotonic()

    def _mark_resync(self, did: str, reason: str) -> None:
        self.stats.resync_marks += 1
        self._resync[did] = reason
        log.info("repo marked for resync", extra={"did": did, "reason": reason})

    def _mark_all_resync(self, reason: str) -> None:
        for did in self.decoder.watched:
            self._resync[did] = reason
        self.stats.resync_marks += len(self.decoder.watched)

    async def _on_account(self, ev: AccountEvent) -> None:
        # Batches cut meanwhile (the timer) stop below this event.
        self._inflight = ev.seq
        try:
            # Everything before this event goes first, with the cursor just below it.
            await self.flush(upto=ev.seq - 1)
            await self._chain(self._write_account(ev))
        finally:
            self._inflight = None

    async def _write_account(self, ev: AccountEvent) -> None:
        self._check_failed()
        cursor = CursorUpdate(self.source.name, ev.seq, _parse_time(ev.time), expected=self.committed)
        try:
            async with self.pool.acquire() as conn:
                outcome = await apply_account(
                    conn, AccountChange(ev.did, ev.active, ev.status, ev.seq), cursor=cursor
                )
            if _CRASH_ARMED:
                crashpoints.hit("account_after_commit")
        except BaseException as exc:
            self._failed = exc
            raise
        self.committed = ev.seq
        log.info(
            "account status",
            extra={"did": ev.did, "active": ev.active, "status": ev.status, "outcome": outcome},
        )

    async def _on_error_frame(self, ev: ErrorFrame) -> None:
        if ev.error == "FutureCursor":
            log.error(
                "relay says our cursor is in its future (it lost data or reset its sequence): "
                "resuming from its live tip and marking indexed repos for resync",
                extra={"source": self.source.name, "cursor": self.decoder.last_seq, "detail": ev.message},
            )
            self._mark_all_resync("FutureCursor: relay sequence reset")
            await self.flush()
            # Accept the relay's new numbering: the next (re)connect starts at the live tip.
            self.decoder.last_seq = -1
        elif ev.error == "ConsumerTooSlow":
            log.warning("relay says we are too slow; it will drop us, we resume from the cursor",
                        extra={"detail": ev.message})
        else:
            log.warning("relay error frame", extra={"error": ev.error, "detail": ev.message})

    # ---- batches ------------------------------------------------------------------------------

    @dataclass
    class _Batch:
        seq: int
        event_time: datetime | None
        ops: list[RecordOp]
        letters: list[DeadLetter]
        revs: dict[str, str]
        resync: dict[str, str]
        handle_checks: set[str]

    def _cut(self, upto: int | None = None) -> Consumer._Batch | None:
        """Take the open batch (synchronously, so it and its cursor match), or None if empty."""
        seq = self.decoder.last_seq if upto is None else upto
        if upto is None and self._inflight is not None:
            seq = self._inflight - 1
        self._opened = None
        if seq < 0 or (
            seq == self.committed
            and not (self._ops or self._letters or self._revs or self._resync or self._handle_checks)
        ):
            return None
        batch = Consumer._Batch(
            seq, _parse_time(self.decoder.last_time) if seq == self.decoder.last_seq else None,
            self._ops, self._letters, self._revs, self._resync, self._handle_checks,
        )  # fmt: skip
        self._ops, self._letters, self._revs, self._resync = [], [], {}, {}
        self._handle_checks = set()
        return batch

    async def flush(self, upto: int | None = None) -> None:
        """Write the open batch now, after every write scheduled before it; failures raise."""
        batch = self._cut(upto)
        if batch is not None:
            await self._chain(self._write(batch))
        elif self._write_task is not None:
            await self._write_task

    async def _flush_soon(self) -> None:
        """Write the open batch in the background; wait only if a write is already in flight."""
        if self._write_task is not None and not self._write_task.done():
            await self._write_task  # backpressure: at most one write in flight
        batch = self._cut()
        if batch is not None:
            self._chain_nowait(self._write(batch))
        elif self._write_task is not None and self._write_task.done():
            self._write_task.result()  # re-raise a failed write

    def _chain_nowait(self, coro: Any) -> asyncio.Task[None]:
        """Schedule `coro` to run after every write scheduled before it (strict order)."""
        previous = self._write_task

        async def after() -> None:
            if previous is not None:
                try:
                    await previous
                except BaseException:
                    coro.close()
                    raise
            await coro

        task = asyncio.create_task(after())
        self._write_task = task
        return task

    async def _chain(self, coro: Any) -> None:
        await self._chain_nowait(coro)

    def _check_failed(self) -> None:
        if self._failed is not None:
            # An earlier batch was lost with its write: writing this one would move the
            # cursor past it. Stop; the restart resumes from the stored cursor.
            raise RuntimeError("an earlier batch write failed") from self._failed

    async def _write(self, batch: Consumer._Batch) -> None:
        self._check_failed()
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
            self._failed = exc
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
            self.decoder.watched.setdefault(did, None)
        if self.handles is not None and (batch.handle_checks or result.new_dids):
            self.handles.poke()  # new actors want a check (column default), and these were asked
        if result.invalid:
            log.warning("records dead-lettered", extra={"count": result.invalid, "seq": batch.seq})

    # ---- observability ------------------------------------------------------------------------

    def _publish_metrics(self) -> None:
        s, p = self.stats, self._published
        s.frames = self.decoder.frames
        other = sum(s.by_type.values()) + s.duplicates
        commits = s.frames - other
        prev_commits = p.frames - sum(p.by_type.values()) - p.duplicates
        metrics.FRAMES.labels("commit").inc(max(0, commits - prev_commits))
        for kind, n in s.by_type.items():
            metrics.FRAMES.labels(kind).inc(n - p.by_type.get(kind, 0))
        metrics.FRAMES.labels("duplicate").inc(s.duplicates - p.duplicates)
        metrics.BAD_FRAMES.inc(s.bad_frames - p.bad_frames)
        metrics.MATCHED_OPS.inc(s.matched_ops - p.matched_ops)
        metrics.RECORDS_WRITTEN.inc(s.written - p.written)
        metrics.STALE_OPS.inc(s.stale - p.stale)
        metrics.DEAD_LETTERS.inc(s.dead_letters - p.dead_letters)
        metrics.BATCHES.inc(s.batches - p.batches)
        metrics.RESYNC_MARKS.inc(s.resync_marks - p.resync_marks)
        self._published = Stats(**{**s.__dict__, "by_type": dict(s.by_type)})
        name = self.source.name
        if self.committed is not None:
            metrics.CURSOR_SEQ.labels(name).set(self.committed)
            if self.decoder.last_seq >= 0:
                metrics.CURSOR_LAG_SEQ.labels(name).set(max(0, self.decoder.last_seq - self.committed))
        if self.committed_time is not None:
            lag = (datetime.now(UTC) - self.committed_time).total_seconds()
            metrics.CURSOR_LAG_SECONDS.labels(name).set(max(0.0, lag))

    def _log_status(self, *, final: bool = False, rate: float | None = None) -> None:
        s = self.stats
        extra = {
            "source": self.source.name,
            "frames": self.decoder.frames,
            "matched_ops": s.matched_ops,
            "written": s.written,
            "stale": s.stale,
            "dead_letters": s.dead_letters,
            "bad_frames": s.bad_frames,
            "verify_failures": s.verify_failures,
            "cursor": self.committed,
        }
        if rate is not None:
            extra["frames_per_s"] = round(rate)
        if self.committed_time is not None:
            extra["lag_s"] = round((datetime.now(UTC) - self.committed_time).total_seconds(), 1)
        log.info("indexer done" if final else "indexer status", extra=extra)

    async def _status_loop(self) -> None:
        last_frames, last_t = self.decoder.frames, time.monotonic()
        while True:
            await asyncio.sleep(self.status_interval)
            now = time.monotonic()
            frames = self.decoder.frames
            self._publish_metrics()
            self._log_status(rate=(frames - last_frames) / max(now - last_t, 1e-9))
            last_frames, last_t = frames, now


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    with contextlib.suppress(InvalidSyntax, TypeError):
        return parse_datetime(value)
    return None
