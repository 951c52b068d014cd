"""The periodic-loop helper, driven by a frozen clock: a pass at start, then one per interval
as time moves; sooner when woken; a failed pass logged and the loop going on (after the
backoff's waits when it has one); a fatal error ending it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhirstore.backoff import Backoff
from fhirstore.clock import FrozenClock
from fhirstore.periodic import Periodic

START = datetime(2026, 3, 20, 6, 0, tzinfo=UTC)


class Work:
    """Counts its passes; fails while `failures` is above zero."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.passes = 0
        self.failures = failures
        self.error = error or RuntimeError("the database is away")

    async def __call__(self) -> None:
        self.passes += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.error


@asynccontextmanager
async def running(loop: Periodic) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(loop.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def moved(clock: FrozenClock, loop: Periodic, by: timedelta) -> None:
    """Move the clock by `by` once the loop has parked, and wait for the pass it sets off."""
    await clock.sleeping(1)
    passed = asyncio.create_task(loop.passed())
    await asyncio.sleep(0)
    clock.advance(by)
    await asyncio.wait_for(passed, 5)


async def test_a_pass_at_start_then_one_each_time_the_interval_has_passed() -> None:
    clock, work = FrozenClock(START), Work()
    loop = Periodic("test loop", work, interval=60, clock=clock)
    async with running(loop):
        await clock.sleeping(1)
        assert work.passes == 1

        clock.advance(timedelta(seconds=59))
        await asyncio.sleep(0)
        assert work.passes == 1  # not yet

        await moved(clock, loop, timedelta(seconds=1))
        assert work.passes == 2
        await moved(clock, loop, timedelta(hours=5))  # a jump: one pass, not three hundred
        assert work.passes == 3


async def test_a_loop_that_waits_first_runs_no_pass_at_start() -> None:
    clock, work = FrozenClock(START), Work()
    loop = Periodic("test loop", work, interval=10, clock=clock, first_pass_at_start=False)
    async with running(loop):
        await clock.sleeping(1)
        assert work.passes == 0
        await moved(clock, loop, timedelta(seconds=10))
        assert work.passes == 1


async def test_wake_runs_the_next_pass_now_without_time_moving() -> None:
    clock, work = FrozenClock(START), Work()
    event = asyncio.Event()
    loop = Periodic("test loop", work, interval=3600, clock=clock, woken_by=event)
    async with running(loop):
        await clock.sleeping(1)
        passed = asyncio.create_task(loop.passed())
        await asyncio.sleep(0)
        loop.wake()
        await asyncio.wait_for(passed, 5)
        assert work.passes == 2

        await clock.sleeping(1)
        passed = asyncio.create_task(loop.passed())
        await asyncio.sleep(0)
        event.set()  # the caller's own event does the same
        await asyncio.wait_for(passed, 5)
        assert work.passes == 3
        assert clock.now() == START


async def test_a_failed_pass_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, work = FrozenClock(START), Work(failures=1)
    loop = Periodic("dispatcher sweep", work, interval=5, clock=clock)
    with caplog.at_level(logging.ERROR, "fhirstore.periodic"):
        async with running(loop) as task:
            await clock.sleeping(1)
            assert "dispatcher sweep failed; trying again in 5s" in caplog.text
            await moved(clock, loop, timedelta(seconds=5))
            assert work.passes == 2
            assert not task.done()


async def test_after_a_failure_the_backoff_says_when_and_a_wake_does_not_cut_it_short() -> None:
    clock, work = FrozenClock(START), Work(failures=3)
    told: list[float] = []
    loop = Periodic(
        "relay",
        work,
        interval=0.5,
        clock=clock,
        backoff=Backoff(1.0, 3.0),
        failed=lambda _error, retry_in: told.append(retry_in),
    )
    async with running(loop):
        await clock.sleeping(1)
        loop.wake()  # a commit while it waits out a failure
        await asyncio.sleep(0)
        assert work.passes == 1

        clock.advance(timedelta(seconds=0.9))
        await asyncio.sleep(0)
        assert work.passes == 1
        passed = asyncio.create_task(loop.passed())
        await asyncio.sleep(0)
        clock.advance(timedelta(seconds=0.1))  # 1 s after the failure
        await asyncio.wait_for(passed, 5)
        await moved(clock, loop, timedelta(seconds=2))
        await moved(clock, loop, timedelta(seconds=3))  # capped at 3 s
        assert work.passes == 4  # and this one succeeded
        assert told == [1.0, 2.0, 3.0]

        work.failures = 1  # after a success the backoff starts afresh
        await moved(clock, loop, timedelta(seconds=0.5))
        assert told == [1.0, 2.0, 3.0, 1.0]


async def test_a_fatal_error_ends_the_loop() -> None:
    class Lost(Exception):
        pass

    clock, work = FrozenClock(START), Work(failures=1, error=Lost("another process has it"))
    loop = Periodic("lease", work, interval=10, clock=clock, fatal=(Lost,))
    with pytest.raises(Lost):
        await asyncio.wait_for(loop.run(), 5)
