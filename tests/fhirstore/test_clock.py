"""The clock: the system clock sleeps for real; a frozen clock's sleepers wake only when the
test moves time past their deadline, earliest deadline first."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from fhirstore.clock import FrozenClock, SystemClock, sleep_or_wake

START = datetime(2026, 3, 20, 6, 0, tzinfo=UTC)


async def _settle() -> None:
    """Let every task that can run, run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_system_clock_sleeps_for_real() -> None:
    loop = asyncio.get_running_loop()
    before = loop.time()
    await SystemClock().sleep(0.02)
    assert loop.time() - before >= 0.019


async def test_a_frozen_sleeper_waits_until_the_test_moves_time_past_its_deadline() -> None:
    clock = FrozenClock(START)
    sleeper = asyncio.create_task(clock.sleep(60))
    await clock.sleeping(1)

    clock.advance(timedelta(seconds=59))
    await _settle()
    assert not sleeper.done()
    assert clock.sleepers == 1

    clock.advance(timedelta(seconds=1))
    await asyncio.wait_for(sleeper, 1)
    assert clock.sleepers == 0


async def test_moving_time_wakes_every_sleeper_due_by_then_in_deadline_order() -> None:
    clock = FrozenClock(START)
    woke: list[str] = []

    async def sleep(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    sleepers = [
        asyncio.create_task(sleep(name, seconds))
        for name, seconds in (("an hour", 3600), ("a second", 1), ("a day", 86400))
    ]
    await clock.sleeping(3)
    clock.set(START + timedelta(hours=2))
    await _settle()
    assert woke == ["a second", "an hour"]
    assert not sleepers[2].done()

    clock.advance(timedelta(days=1))
    await asyncio.wait_for(asyncio.gather(*sleepers), 1)
    assert woke == ["a second", "an hour", "a day"]


async def test_a_cancelled_sleeper_is_not_woken_and_does_not_count() -> None:
    clock = FrozenClock(START)
    cancelled = asyncio.create_task(clock.sleep(10))
    kept = asyncio.create_task(clock.sleep(10))
    await clock.sleeping(2)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert clock.sleepers == 1

    clock.advance(timedelta(seconds=10))
    await asyncio.wait_for(kept, 1)


async def test_a_sleep_of_nothing_returns_without_time_moving() -> None:
    clock = FrozenClock(START)
    await asyncio.wait_for(clock.sleep(0), 1)
    await asyncio.wait_for(clock.sleep(-5), 1)
    assert clock.now() == START


async def test_sleep_or_wake_returns_early_when_woken_and_says_so() -> None:
    clock = FrozenClock(START)
    wake = asyncio.Event()
    waiting = asyncio.create_task(sleep_or_wake(clock, 30, wake))
    await clock.sleeping(1)
    wake.set()
    assert await asyncio.wait_for(waiting, 1) is True
    assert clock.sleepers == 0  # its sleep was cancelled, not left behind

    wake.clear()
    timed_out = asyncio.create_task(sleep_or_wake(clock, 30, wake))
    await clock.sleeping(1)
    clock.advance(timedelta(seconds=30))
    assert await asyncio.wait_for(timed_out, 1) is False


def test_a_frozen_clock_needs_a_timezone() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FrozenClock(datetime(2026, 3, 20, 6, 0))
