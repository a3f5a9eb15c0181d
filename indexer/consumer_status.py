"""What the consumer has done so far: its counters, published as Prometheus metrics and logged
as a status line every few seconds and once at the end.

The hot loop only bumps plain integers in `Stats` (a Counter.inc takes a lock); the metrics get
the difference since the previous publish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.logging import get_logger
from indexer import metrics

log = get_logger("plyr.indexer")


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

    def count(self, kind: str) -> None:
        """One more event of a kind other than `#commit` (see `by_type`)."""
        self.by_type[kind] = self.by_type.get(kind, 0) + 1


@dataclass(frozen=True)
class Position:
    """Where the consumer stands in its stream."""

    frames: int  # frames decoded
    last_seq: int  # last event decoded (-1: none yet)
    committed: int | None  # the seq stored in `cursors`
    committed_time: datetime | None  # the event time at `committed`, when it had one


class StatusReporter:
    def __init__(self, source: str, stats: Stats, position: Callable[[], Position]) -> None:
        self.source = source
        self.stats = stats
        self.position = position
        self._published = Stats()

    def publish(self) -> None:
        """Add what happened since the last publish to the metrics; set the cursor gauges."""
        s, p, at = self.stats, self._published, self.position()
        s.frames = at.frames
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
        name = self.source
        if at.committed is not None:
            metrics.CURSOR_SEQ.labels(name).set(at.committed)
            if at.last_seq >= 0:
                metrics.CURSOR_LAG_SEQ.labels(name).set(max(0, at.last_seq - at.committed))
        if at.committed_time is not None:
            lag = (datetime.now(UTC) - at.committed_time).total_seconds()
            metrics.CURSOR_LAG_SECONDS.labels(name).set(max(0.0, lag))

    def log(self, *, final: bool = False, rate: float | None = None) -> None:
        s, at = self.stats, self.position()
        extra: dict[str, object] = {
            "source": self.source,
            "frames": at.frames,
            "matched_ops": s.matched_ops,
            "written": s.written,
            "stale": s.stale,
            "dead_letters": s.dead_letters,
            "bad_frames": s.bad_frames,
            "verify_failures": s.verify_failures,
            "cursor": at.committed,
        }
        if rate is not None:
            extra["frames_per_s"] = round(rate)
        if at.committed_time is not None:
            extra["lag_s"] = round((datetime.now(UTC) - at.committed_time).total_seconds(), 1)
        log.info("indexer done" if final else "indexer status", extra=extra)

    async def run(self, interval: float) -> None:
        """Publish and log every `interval` seconds, with the frame rate since the last time."""
        last_frames, last_t = self.position().frames, time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            frames = self.position().frames
            self.publish()
            self.log(rate=(frames - last_frames) / max(now - last_t, 1e-9))
            last_frames, last_t = frames, now
