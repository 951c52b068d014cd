"""How the delivery core delivers: `DeliveryPolicy` (timeouts, the retry backoff schedule, the
give-up age, leases, worker limits, retention, and who is told of attempts and status writes).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from channels.attempt import Attempt
from channels.transport import Failure
from channels.unprocessable import BoundedTries
from fhirstore.access import Record


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    base_url: str  # FHIR base used in fullUrl and references
    default_timeout: float = 10.0
    initial_backoff: float = 1.0
    max_backoff: float = 300.0
    give_up_after: timedelta = timedelta(hours=24)
    lease: timedelta = timedelta(seconds=30)
    sweep_interval: float = 1.0
    max_workers: int = 200
    linger: float = 2.0  # seconds an idle worker keeps its subscription's lease
    retention: timedelta = timedelta(days=7)
    prune_interval: float = 3600.0
    record_attempt: Callable[[Attempt], None] | None = None  # told of every attempt (audit)
    record_write: Record | None = None  # told of every Subscription status write (audit)
    # Tries of a notification that cannot be built or sent (an unexpected error), then a
    # dead letter (docs/quarantine.md).
    unsendable: BoundedTries = field(default_factory=BoundedTries)

    def backoff(self, attempt: int, failure: Failure | None = None) -> float:
        """Seconds to wait after failed try number `attempt` + 1: exponential from
        `initial_backoff` up to `max_backoff`, with jitter over its upper half. A permanent
        `failure` (one that needs someone to change something: `Failure.permanent`) waits
        the longest at once: trying again soon cannot help, but trying at all still delivers
        the backlog once the receiver is fixed."""
        if failure is not None and failure.permanent:
            ceiling = self.max_backoff
        else:
            ceiling = min(self.max_backoff, self.initial_backoff * 2**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)
