"""core/backoff.py: the one formula, and the delays each user had before it was shared."""

from __future__ import annotations

import random

import pytest

from core.backoff import Backoff, backoff_delay


def test_doubles_from_base_up_to_cap_without_jitter() -> None:
    assert [backoff_delay(n, base=5, cap=600) for n in range(9)] == [5, 10, 20, 40, 80, 160, 320, 600, 600]
    # the resync loop: interval 5 s, first failure is attempt 1, at most a minute
    assert [backoff_delay(n, base=5.0, cap=60.0) for n in (1, 2, 3, 4)] == [10, 20, 40, 60]


@pytest.mark.parametrize(("jitter", "low"), [("full", 0.0), ("half", 0.5)])
def test_jitter_stays_within_its_share(jitter: str, low: float) -> None:
    random.seed(7)
    for attempt in range(12):
        ceiling = min(60.0, 1.0 * 2**attempt)
        delays = [backoff_delay(attempt, base=1.0, cap=60.0, jitter=jitter) for _ in range(50)]  # type: ignore[arg-type]
        assert all(low * ceiling <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered, not fixed


def test_counting_backoff_grows_and_resets() -> None:
    b = Backoff(base=1, cap=8, jitter="none")
    assert [b.next_delay() for _ in range(5)] == [1, 2, 4, 8, 8]
    b.reset()
    assert b.next_delay() == 1
    assert Backoff().jitter == "full" and (Backoff().base, Backoff().cap) == (0.5, 60.0)
