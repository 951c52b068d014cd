"""The one clock. Everything that needs the time takes a `Clock`, and every background loop
waits on it (through `fhirstore.periodic`), so tests move time instead of polling. Three waits
are still in real time: the delivery core's retry waits (`channels/retries.py`,
`channels/delivery.py`), the bus's consumer retries (a bus has no clock), and the WebSocket
bind's short wait for its registration (`channels/websocket/api.py`).

`SystemClock` is the real one. `FrozenClock` only moves when a test tells it to, and its
`sleep` returns once the test has moved the time past the sleeper's deadline, so tests move
time instead of polling: `clock.advance(...)` wakes every loop that was due by then.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock (at once for zero or less)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FrozenClock:
    """A clock that only moves when told to (tests). A sleeper wakes when `advance` or `set`
    moves the time to or past its deadline; until then it waits, however long that takes."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware start")
        self._now = start
        # (deadline, arrival order, waiter): the earliest deadline first, then first come.
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._parked: asyncio.Event | None = None  # set whenever a sleeper arrives

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)  # still a point where other tasks run, as a real sleep is
            return
        waiter = asyncio.get_running_loop().create_future()
        deadline = self._now + timedelta(seconds=seconds)
        heapq.heappush(self._sleepers, (deadline, next(self._arrivals), waiter))
        if self._parked is not None:
            self._parked.set()
        await waiter  # a cancelled sleeper's future is done: `_wake` skips it

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for time to move (so a test knows a loop has parked)."""
        return sum(1 for _, _, waiter in self._sleepers if not waiter.done())

    async def sleeping(self, count: int = 1) -> None:
        """Return once at least `count` sleeps wait for time to move (a test waits for its
        loops to park before it moves time)."""
        while self.sleepers < count:
            self._parked = self._parked or asyncio.Event()
            self._parked.clear()
            await self._parked.wait()

    def advance(self, delta: timedelta) -> None:
        self.set(self._now + delta)

    def set(self, instant: datetime) -> None:
        self._now = instant
        self._wake()

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)


async def sleep_or_wake(clock: Clock, seconds: float, wake: asyncio.Event) -> bool:
    """Sleep `seconds` on `clock`, or less if `wake` is set first; whether it was."""
    if wake.is_set():
        return True
    sleeping = asyncio.ensure_future(clock.sleep(seconds))
    woken = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (sleeping, woken):
            waiter.cancel()
        # Wait for them to end without taking their cancellation for ours: a caller
        # cancelled meanwhile must see its CancelledError, never have it swallowed.
        await asyncio.wait((sleeping, woken))
    return wake.is_set()
