"""Exponential backoff: how long to wait before the next try, the same formula everywhere.

The n-th retry (`attempt` counts from 0) waits `base * 2**attempt`, at most `cap`, with optional
jitter so that many clients failing together do not come back together:

- "none": exactly that (delays a person reads in a log or a job row; tests pin them);
- "full": uniformly between 0 and that (reconnecting to one shared firehose);
- "half": uniformly between half of it and all of it (retrying a request, never much sooner).

Backoffs computed in SQL (resync due dates, handle checks, media deferrals) follow the same
shape in their statements.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Jitter = Literal["none", "full", "half"]


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: Jitter = "none") -> float:
    """Seconds to wait before retry number `attempt` (0 = the first retry)."""
    delay = min(cap, base * 2**attempt)
    if jitter == "full":
        return random.uniform(0, delay)
    if jitter == "half":
        return delay * (0.5 + random.random() / 2)
    return delay


@dataclass
class Backoff:
    """A backoff that counts its own attempts; `reset` once things work again."""

    base: float = 0.5
    cap: float = 60.0
    jitter: Jitter = "full"
    attempt: int = 0

    def next_delay(self) -> float:
        delay = backoff_delay(self.attempt, base=self.base, cap=self.cap, jitter=self.jitter)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
