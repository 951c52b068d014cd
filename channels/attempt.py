"""One try at sending a notification: the `Attempt` record the audit trail is told of, and
`try_send`, which hands a `Delivery` to its transport (a handshake's or heartbeat's unexpected
error becomes a failed `Outcome`; an event notification's is raised to the bounded tries).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from channels.transport import Delivery, Outcome, Transport
from fhirstore import failed_at
from subscriptions import NotificationType, RecordedEvent, SubscriptionSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at sending a notification: `events` are those it carried (none for a
    handshake or heartbeat)."""

    spec: SubscriptionSpec
    kind: NotificationType
    events: Sequence[RecordedEvent]
    outcome: Outcome


async def try_send(transport: Transport, delivery: Delivery) -> Outcome:
    """The transport's outcome. An event notification's unexpected error is raised (its tries
    are bounded, then its events are set aside); a handshake's or heartbeat's is a failed
    outcome naming it, so the subscription shows `error` and retries as for a failed delivery."""
    try:
        return await transport.send(delivery)
    except Exception as error:
        if delivery.kind == "event-notification":
            raise
        problem = (
            f"the {delivery.kind} could not be sent: {type(error).__name__} at {failed_at(error)}"
        )
        log.warning("subscription %s: %s", delivery.subscription_id, problem)
        return Outcome(ok=False, status_code=None, error=problem, elapsed=0.0)
