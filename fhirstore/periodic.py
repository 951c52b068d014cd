"""The one helper for periodic loops: run a piece of work every `interval` seconds on the
injected clock, or sooner when woken, until cancelled.

A pass that raises is logged and the loop goes on: after the interval or, with a `Backoff`,
after the backoff's next wait (which a wake does not cut short, so that a busy writer cannot
hammer a broker that is down). A background loop never dies of one bad pass, except of the
exceptions named `fatal` (a lost lease or leadership), which end it. Waiting goes through
`Clock.sleep`, so with a `FrozenClock` a test moves time to run the next pass instead of
waiting for it, and `passed()` tells it when that pass is over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from fhirstore.backoff import Backoff
from fhirstore.clock import Clock, sleep_or_wake

log = logging.getLogger(__name__)


class Periodic:
    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[object]],
        *,
        interval: float,
        clock: Clock,
        first_pass_at_start: bool = True,
        backoff: Backoff | None = None,
        fatal: tuple[type[Exception], ...] = (),
        failed: Callable[[Exception, float], None] | None = None,
        woken_by: asyncio.Event | None = None,
    ) -> None:
        """`name` says which loop in the log ("<name> failed; trying again in 5s");
        `failed`, when given, is told of a failed pass and the seconds until the next one
        instead (to log it its own way). Setting `woken_by` (an event of the caller's) is
        the same as calling `wake`."""
        self.name = name
        self._work = work
        self.interval = interval
        self._clock = clock
        self._first_pass_at_start = first_pass_at_start
        self._backoff = backoff
        self._delays = backoff.delays() if backoff is not None else None
        self._fatal = fatal
        self._failed = failed
        self._woken = woken_by if woken_by is not None else asyncio.Event()
        self._begun = 0  # passes begun so far
        self._finished = 0  # the number of the last pass to finish
        self._pass_done = asyncio.Condition()

    def wake(self) -> None:
        """Run the next pass now rather than at the end of the interval (or, during a pass,
        once more right after it)."""
        self._woken.set()

    async def run(self) -> NoReturn:
        """Pass, wait, pass, ... until cancelled."""
        if not self._first_pass_at_start:
            await self._wait()
        while True:
            retry_in = await self.run_once()
            if retry_in is None:
                await self._wait()
            else:
                await self._clock.sleep(retry_in)

    async def run_once(self) -> float | None:
        """One pass now, its failure logged (not raised, unless `fatal`): with a backoff, the
        seconds to wait before the next try after a failure, else None."""
        self._woken.clear()
        self._begun += 1
        number = self._begun
        retry_in: float | None = None
        try:
            await self._work()
        except asyncio.CancelledError:
            raise
        except self._fatal:
            raise
        except Exception as error:
            retry_in = next(self._delays) if self._delays is not None else None
            wait = self.interval if retry_in is None else retry_in
            if self._failed is not None:
                self._failed(error, wait)
            else:
                log.exception("%s failed; trying again in %gs", self.name, wait)
        else:
            if self._backoff is not None:
                self._delays = self._backoff.delays()  # afresh after a success
        finally:
            async with self._pass_done:
                self._finished = max(self._finished, number)
                self._pass_done.notify_all()
        return retry_in

    async def passed(self) -> None:
        """Return once a pass that began after this call has finished (tests: move the clock
        past the loop's next pass, then await this to see what that pass did)."""
        since = self._begun
        async with self._pass_done:
            await self._pass_done.wait_for(lambda: self._finished > since)

    async def _wait(self) -> None:
        """The interval on the clock, cut short by `wake`."""
        await sleep_or_wake(self._clock, self.interval, self._woken)
