"""Status work about one subscription done beside whoever found the reason, never in its way.

The matcher (a ValueSet that can no longer be expanded, a topic over its FHIRPath budget) and
the registry (a stored Subscription it cannot load) find reasons to change a subscription's
status while they must not wait for a database write. They hand the work to `SubscriptionMarks`:
one piece of work at a time per subscription, in a task of its own; news arriving while one
runs replaces any news still waiting (the latest wins) and runs after it; `drain` waits for
what is under way (at stop). `ErrorMarks` is the common case: `error` with a reason, not
written again when the ledger already shows that reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from subscriptions.ledger import Ledger
from subscriptions.lifecycle import Lifecycle

log = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]


class SubscriptionMarks:
    """Runs status work per subscription, one at a time each, the latest news last."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()  # subscriptions with work under way
        self._next: dict[str, Work] = {}  # the work to do for one of them after that

    def start(self, subscription_id: str, work: Work) -> None:
        if subscription_id in self._busy:
            self._next[subscription_id] = work
            return
        self._busy.add(subscription_id)
        task = asyncio.create_task(self._run(subscription_id, work))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, subscription_id: str, work: Work) -> None:
        try:
            while True:
                try:
                    await work()
                except Exception:
                    log.exception("could not change the status of Subscription/%s", subscription_id)
                following = self._next.pop(subscription_id, None)
                if following is None:
                    return
                work = following
        finally:
            self._busy.discard(subscription_id)

    async def drain(self) -> None:
        """Wait for the work under way, and what follows it."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


class ErrorMarks:
    """Sets subscriptions `error` with a reason (`mark` returns at once); one that is off, or
    already shows the same reason, is left as it is."""

    def __init__(self, ledger: Ledger, lifecycle: Lifecycle) -> None:
        self._ledger = ledger
        self._lifecycle = lifecycle
        self._marks = SubscriptionMarks()

    def mark(self, subscription_id: str, reason: str) -> None:
        self._marks.start(subscription_id, partial(self._mark, subscription_id, reason))

    async def _mark(self, subscription_id: str, reason: str) -> None:
        progress = await self._ledger.progress(subscription_id)
        if progress is None or progress.status == "off":
            return
        if progress.status == "error" and progress.last_error == reason:
            return
        await self._lifecycle.transition(subscription_id, "error", error=reason)

    async def drain(self) -> None:
        """Wait for the markings under way (at stop)."""
        await self._marks.drain()
