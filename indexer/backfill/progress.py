"""Backfill progress: a tqdm bar on a terminal, one log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("plyr.backfill")


class Progress:
    def __init__(
        self,
        total: int,
        *,
        tty: bool | None = None,
        interval: float = 10.0,
        label: str = "backfill",
    ) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.records = 0
        self.label = label
        self.interval = interval
        self.started = time.monotonic()
        self._last_log = self.started
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._bar: Any = None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, unit="repo", desc=label, dynamic_ncols=True, file=sys.stderr
            )

    def update(self, ok: bool, records: int) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        self.records += records
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(records=self.records, failed=self.failed, refresh=False)
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval or self.done == self.total:
            self._last_log = now
            log.info(f"{self.label} progress", extra=self.figures(now))

    def figures(self, now: float | None = None) -> dict[str, Any]:
        elapsed = (now or time.monotonic()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        return {
            "repos_done": self.done,
            "repos_total": self.total,
            "failed": self.failed,
            "records": self.records,
            "repos_per_s": round(rate, 2),
            "records_per_s": round(self.records / elapsed, 1) if elapsed > 0 else 0.0,
            "eta_s": round(left / rate) if rate > 0 else None,
        }

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
