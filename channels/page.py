"""A page of owed events being delivered: which ones the endpoint accepted, recorded in the
ledger now and then (every `RECORD_EVERY` seconds, before a retry and at the end of the page),
so a crash in between sends only those notifications again, with the same keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from subscriptions import RecordedEvent

RECORD_EVERY = 0.05  # seconds between progress writes while a page is being delivered

# Records events (right after `through`) as delivered.
RecordDelivered = Callable[[int, Sequence[RecordedEvent]], Awaitable[None]]


class Page:
    """Events accepted while a page is delivered, recorded in the ledger now and then."""

    def __init__(self, record_delivered: RecordDelivered, through: int) -> None:
        self._record_delivered = record_delivered
        self.through = through  # delivered_through as the ledger has it
        self._accepted: list[RecordedEvent] = []
        self._recorded_at = asyncio.get_running_loop().time()

    def accept(self, events: Sequence[RecordedEvent]) -> None:
        self._accepted.extend(events)

    async def record(self) -> None:
        if self._accepted:
            accepted, self._accepted = self._accepted, []
            await self._record_delivered(self.through, accepted)
            self.through = accepted[-1].event_number
        self._recorded_at = asyncio.get_running_loop().time()

    async def record_if_due(self) -> None:
        if asyncio.get_running_loop().time() - self._recorded_at >= RECORD_EVERY:
            await self.record()
