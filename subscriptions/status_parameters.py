"""The notification status in the Backport IG's R4 form: a Parameters resource.

R4 has no SubscriptionStatus, so the IG carries the same facts in a Parameters resource with the
profile `backport-subscription-status-r4` (set in `meta.profile`), one `parameter` per element:

| R4B SubscriptionStatus             | R4 Parameters `parameter` (value)                   |
|------------------------------------|-----------------------------------------------------|
| `subscription`                     | `subscription` (valueReference)                     |
| `topic`                            | `topic` (valueCanonical)                            |
| `status`                           | `status` (valueCode)                                |
| `type`                             | `type` (valueCode)                                  |
| `eventsSinceSubscriptionStart`     | `events-since-subscription-start` (valueString)     |
| `notificationEvent` (one each)     | `notification-event` (one each), with `part`s       |
|   `.eventNumber`                   |   `event-number` (valueString)                      |
|   `.timestamp`                     |   `timestamp` (valueInstant)                        |
|   `.focus`                         |   `focus` (valueReference)                          |
|   `.additionalContext`             |   `additional-context` (valueReference, repeated)   |
| `error` (CodeableConcept, repeated)| `error` (valueCodeableConcept, one per error)       |

Herald's topics declare no `notificationShape`, so neither form carries additional context.
Event numbers and the count are strings, as in R4B. The caller (`notification.py`) has already
applied the content level: a `StatusEvent` carries a focus only where the level shows one, so
both forms say exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhirstore.wire import STATUS_R4_PROFILE


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One event as a notification status shows it (after the content level was applied)."""

    event_number: int
    timestamp: str  # a FHIR instant
    focus: str | None  # absolute reference; None when the content level hides it


def status_parameters(
    *,
    resource_id: str,
    subscription: str,
    topic: str,
    status: str,
    notification_type: str,
    events_since_start: int,
    events: Sequence[StatusEvent],
    errors: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The R4 status Parameters (profile `backport-subscription-status-r4`); `errors` are
    CodeableConcepts (`status_error.py`)."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": subscription}},
        {"name": "topic", "valueCanonical": topic},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": notification_type},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    parameters.extend(_notification_event(event) for event in events)
    parameters.extend({"name": "error", "valueCodeableConcept": e} for e in errors)
    return {
        "resourceType": "Parameters",
        "id": resource_id,
        "meta": {"profile": [STATUS_R4_PROFILE]},
        "parameter": parameters,
    }


def _notification_event(event: StatusEvent) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"name": "event-number", "valueString": str(event.event_number)},
        {"name": "timestamp", "valueInstant": event.timestamp},
    ]
    if event.focus is not None:
        parts.append({"name": "focus", "valueReference": {"reference": event.focus}})
    return {"name": "notification-event", "part": parts}
