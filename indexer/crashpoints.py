"""Test-only crash points: die with `os._exit(137)` at a named seam of the write path.

`PLYR_CRASH_AT=<point>[:<n>]` (read once, at import) makes the N-th hit (default 1) of that
point end the process at once, as a SIGKILL would: no cleanup, no rollback handshake, nothing
flushed. The crash tests use it to stop the real `plyr index` at exact places between a write
and its commit, and between a commit and the consumer recording it.

Points: rows_written_before_commit, before_commit, after_commit_before_ack (batch writes);
account_before_commit, account_after_commit (#account changes).

Zero cost when unset: call sites test the module constant `ARMED` (a plain global read)
before calling `hit`, e.g. `if crashpoints.ARMED: crashpoints.hit("before_commit")`.
"""

from __future__ import annotations

import os
import sys

from indexer.settings import CRASH_AT

POINTS = frozenset({
    "rows_written_before_commit",
    "before_commit",
    "after_commit_before_ack",
    "account_before_commit",
    "account_after_commit",
})


def _parse(spec: str | None) -> tuple[str | None, int]:
    if not spec:
        return None, 0
    name, _, nth = spec.partition(":")
    if name not in POINTS:
        raise SystemExit(f"PLYR_CRASH_AT: unknown crash point {name!r} (one of {', '.join(sorted(POINTS))})")
    try:
        n = int(nth) if nth else 1
    except ValueError:
        raise SystemExit(f"PLYR_CRASH_AT: {nth!r} is not a hit count") from None
    if n < 1:
        raise SystemExit("PLYR_CRASH_AT: the hit count starts at 1")
    return name, n


POINT, NTH = _parse(CRASH_AT.read())
ARMED = POINT is not None
_hits = 0


def hit(point: str) -> None:
    """Count a pass through `point`; at the configured hit, end the process (exit code 137)."""
    global _hits
    if point != POINT:
        return
    _hits += 1
    if _hits == NTH:
        sys.stderr.write(f"PLYR_CRASH_AT: crashing at {point} #{NTH}\n")
        sys.stderr.flush()
        os._exit(137)
