"""What Herald does when a topic's fhirPathCriteria spends its budget on a change: the change
matches nothing for that topic; this counts it (`herald_fhirpath_over_budget{stage="match"}`),
logs it (ids only, no resource content) and marks each subscription that missed the change
`error`, through the same `Lifecycle` the dispatchers use, so `$status`, `$events` and the
Subscription resource show why, and what to do.

The marking runs beside the matcher, never in its way: the matcher only hands the report over.
A subscription already showing the same reason is not written again. It shows `error` until a
delivery succeeds again (or its owner updates it), as for a receiver that is down.
"""

from __future__ import annotations

import logging

from subscriptions.index import MissedByBudget
from subscriptions.marks import ErrorMarks
from subscriptions.metrics import FHIRPATH_OVER_BUDGET

log = logging.getLogger(__name__)


def reason(missed: MissedByBudget) -> str:
    """The error a subscription shows: which topic and trigger, which budget, what to do."""
    topic = missed.topic
    named = topic.url
    if topic.resource_id:
        named = f"SubscriptionTopic/{topic.resource_id} ({topic.url})"
    return (
        f"{named} resourceTrigger[{missed.trigger_index}].fhirPathCriteria "
        f"{missed.error} on a {missed.event.resource_type} {missed.event.interaction}"
        ", which therefore notified no one. The topic's author can simplify the expression; "
        "the server's operator can raise the budget."
    )


class MissedByBudgetReporter(ErrorMarks):
    """Counts, logs and marks (`ErrorMarks`) what a topic over budget kept from subscribers."""

    def __call__(self, missed: MissedByBudget) -> None:
        error = missed.error
        FHIRPATH_OVER_BUDGET.labels("match", error.limit).inc()
        log.warning(
            "fhirPathCriteria over budget: no match",
            extra={
                "topic": missed.topic.url,
                "trigger": missed.trigger_index,
                "limit": error.limit,
                "event_id": missed.event.event_id,
                "resource": missed.event.key,
                "subscriptions": len(missed.subscription_ids),
            },
        )
        text = reason(missed)
        for subscription_id in missed.subscription_ids:
            self.mark(subscription_id, text)
