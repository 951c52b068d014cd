"""The one backoff policy: wait `initial` seconds after the first failure, twice as long after
each further one, never longer than `maximum`.

Every retry in Herald that waits between tries (the outbox relay, the bus's consumer retries,
leadership, the quarantine's tries) takes its waits from a `Backoff`; only the numbers differ,
and they come from settings.
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
