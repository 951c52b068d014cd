"""Which requests are scheduled: active ones that authorise doing something.

A request is scheduled when its `status` is `active` (a draft is not yet in force; one on hold,
stopped, completed, cancelled, revoked or entered in error no longer asks anything), its
`intent` (for the types that have one) is an order or a plan, and it is not `doNotPerform`.
FHIR's order intents are `order` and its kinds `original-order`, `reflex-order`,
`filler-order` and `instance-order` (http://hl7.org/fhir/request-intent): all authorise the
care, as `plan` does for a CarePlan; a `proposal`, an `option` or a `directive` is not yet
agreed care and gets no Tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.requests.schedule import NotScheduled

ACTIVE = "active"
SCHEDULED_INTENTS = frozenset(
    {"order", "original-order", "reflex-order", "filler-order", "instance-order", "plan"}
)


def check_scheduled(request: Mapping[str, Any], target: str, *, has_intent: bool = True) -> None:
    """Raises NotScheduled unless `request` is active, an order or plan, and to be performed."""
    status = request.get("status")
    if status != ACTIVE:
        raise NotScheduled(
            f"{target} has status {status!r}: only active requests are scheduled (its Tasks"
            " come when it is active)"
        )
    intent = request.get("intent")
    if has_intent and intent not in SCHEDULED_INTENTS:
        raise NotScheduled(
            f"{target} has intent {intent!r}: only orders and plans are scheduled, not"
            " proposals or options"
        )
    if request.get("doNotPerform") is True:
        raise NotScheduled(f"{target} has doNotPerform true: it says what is not to be done")
