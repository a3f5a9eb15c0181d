"""FairGate: slots handed to waiters in arrival order (no overtaking), `first` jumps the line,
and a cancelled waiter neither loses nor leaks a slot."""

from __future__ import annotations

import asyncio

import pytest

from appview.fairpool import FairGate


async def test_waiters_get_slots_in_arrival_order_and_nobody_overtakes() -> None:
    gate = FairGate(1)
    order: list[str] = []
    await gate.acquire()

    async def worker(name: str, first: bool = False) -> None:
        await gate.acquire(first=first)
        order.append(name)
        await asyncio.sleep(0)
        gate.release()

    tasks = [asyncio.create_task(worker(n)) for n in ("a", "b", "c")]
    await asyncio.sleep(0)
    urgent = asyncio.create_task(worker("urgent", first=True))
    await asyncio.sleep(0)
    gate.release()
    # A newcomer arriving right after the release must queue behind the woken waiter.
    late = asyncio.create_task(worker("late"))
    await asyncio.gather(*tasks, urgent, late)
    assert order == ["urgent", "a", "b", "c", "late"]
    await gate.acquire()  # the single slot is free again
    gate.release()


async def test_a_cancelled_waiter_keeps_the_count_right() -> None:
    gate = FairGate(1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release()
    await asyncio.wait_for(gate.acquire(), 1)  # the slot was not lost to the cancelled waiter
    gate.release()

    # Handed the slot and cancelled before running: the slot passes on, not leaked.
    await gate.acquire()
    handed = asyncio.create_task(gate.acquire())
    nxt = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    await asyncio.wait_for(nxt, 1)
    gate.release()
    await asyncio.wait_for(gate.acquire(), 1)
