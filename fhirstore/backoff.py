"""The one backoff policy: wait `initial` seconds after the first failure, twice as long after
each further one, never longer than `maximum`.

The outbox relay, the bus's consumer retries, leadership, the periodic loops and the tries of a
notification that cannot be built or sent take their waits from a `Backoff`; only the numbers
differ, and they come from settings. Notification delivery keeps its own schedule
(`channels/policy.py`: the same doubling, with jitter so many subscriptions do not retry in
step, and a give-up age instead of a cap on tries).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float  # seconds before the second try
    maximum: float  # the longest wait after the first

    def delays(self) -> Iterator[float]:
        """The waits after the first, second, ... failure (endless; start afresh with a new
        iterator after a success)."""
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * 2, self.maximum)
