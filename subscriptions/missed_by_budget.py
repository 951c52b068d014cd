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

import asyncio
import logging

from subscriptions.index import MissedByBudget
from subscriptions.ledger import Ledger
from subscriptions.lifecycle import Lifecycle
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


class MissedByBudgetReporter:
    def __init__(self, ledger: Ledger, lifecycle: Lifecycle) -> None:
        self._ledger = ledger
        self._lifecycle = lifecycle
        self._marking: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()  # subscriptions being marked right now

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
            if subscription_id not in self._busy:
                self._busy.add(subscription_id)
                task = asyncio.create_task(self._mark(subscription_id, text))
                self._marking.add(task)
                task.add_done_callback(self._marking.discard)

    async def _mark(self, subscription_id: str, text: str) -> None:
        try:
            progress = await self._ledger.progress(subscription_id)
            if progress is None or progress.status == "off":
                return
            if progress.status == "error" and progress.last_error == text:
                return
            await self._lifecycle.transition(subscription_id, "error", error=text)
        except Exception:
            log.exception("could not mark Subscription/%s as error", subscription_id)
        finally:
            self._busy.discard(subscription_id)

    async def drain(self) -> None:
        """Wait for the markings under way (at stop)."""
        if self._marking:
            await asyncio.gather(*self._marking, return_exceptions=True)
