"""Bounded tries of a notification that cannot be built or sent: an unexpected error (a stored
resource the notification builder chokes on, a bug in a transport), as opposed to a failed
delivery, which a transport reports as an `Outcome` and which the delivery core retries up to
the give-up age.

`BoundedTries.run` tries the work up to `tries` times with a doubling wait; an outage of the
database (`outage` says so) is not the event's fault and is raised to the dispatcher uncounted
(its sweep starts the subscription again). When no tries are left it returns an `Unsendable`
whose reason the delivery core records in a dead letter (`herald dead-letters`, replayable with
`herald replay`), so the subscription moves on to its next events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fhirstore import Backoff, failed_at
from subscriptions import RecordedEvent

T = TypeVar("T")

Outage = Callable[[Exception], Awaitable[bool]]
_TEXT = 500  # characters of the error's own text kept in the dead letter


@dataclass(frozen=True, slots=True)
class Unsendable:
    """Why a notification could not be built or sent, after its tries."""

    summary: str  # what and where, never the error's text: for the status, logs and metrics
    detail: str  # the summary and the error's text (may quote the resource): the dead letter


def describe(
    error: Exception, events: Sequence[RecordedEvent], attempt: int, tries: int
) -> Unsendable:
    """Why, naming the events, the try and where the error was raised."""
    first = events[0]
    which = (
        f"event {first.event_number} ({first.res_type}/{first.res_id} version {first.version_id})"
        if len(events) == 1
        else f"events {first.event_number}-{events[-1].event_number}"
    )
    when = f"after {attempt} tries" if attempt >= tries else f"(try {attempt} of {tries})"
    summary = (
        f"the notification of {which} could not be built or sent {when}: "
        f"{type(error).__name__} at {failed_at(error)}"
    )
    return Unsendable(summary, f"{summary}: {str(error)[:_TEXT]}")


@dataclass(frozen=True, slots=True)
class BoundedTries:
    tries: int = 5
    initial_backoff: float = 0.5  # seconds before the second try; doubled per try
    max_backoff: float = 30.0
    outage: Outage | None = None  # whether an error is the database being unreachable

    async def run(
        self,
        work: Callable[[], Awaitable[T]],
        events: Sequence[RecordedEvent],
        *,
        passes: tuple[type[Exception], ...],
        failed: Callable[[Unsendable, int], Awaitable[None]],
        wait: Callable[[float], Awaitable[None]],
    ) -> T | Unsendable:
        """`work()`'s result, or why it kept failing. Exceptions of `passes` (the delivery
        core's own signals) and outages are raised; each other failure is told to `failed`
        (with the try number) and, while tries are left, waited out with `wait`."""
        delays = Backoff(self.initial_backoff, self.max_backoff).delays()
        attempt = 0
        while True:
            try:
                return await work()
            except passes:
                raise
            except Exception as error:
                if self.outage is not None and await self.outage(error):
                    raise
                attempt += 1
                why = describe(error, events, attempt, self.tries)
                await failed(why, attempt)
                if attempt >= self.tries:
                    return why
            await wait(next(delays))
