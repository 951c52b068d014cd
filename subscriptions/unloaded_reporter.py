"""What Herald does about a stored Subscription it cannot load (`unloaded.py`): it puts it in
`error` with the reason (ledger and resource, through `Lifecycle.set_error`), so `$status`
and the Subscription itself tell its owner; logs one warning with the id, the kind of cause,
the element and the filter parameter names (never their values, nor the message, which may
quote them); and counts it (`herald_subscriptions_put_in_error_unloaded{kind}`).

While it cannot be loaded it is matched against nothing: a change committed meanwhile is never
an event of it (the IG lets a subscription in error accumulate events, but Herald cannot tell
which changes a filter it cannot parse would have let through). When it loads again without
its owner's update (the topic or the setting was put right), it stays `error` with a reason
that says so, and turns `active` with its next notification that reaches the endpoint; an
update by its owner starts it over as `requested`, as any update does.

The marking runs beside the registry, never in its way (`marks.py`): one mark at a time per
subscription (the latest news meanwhile is acted on after it), and none when the ledger already
shows the same reason.
"""

from __future__ import annotations

import logging
from functools import partial

from subscriptions.ledger import Ledger
from subscriptions.lifecycle import Lifecycle
from subscriptions.marks import SubscriptionMarks
from subscriptions.metrics import SUBSCRIPTIONS_PUT_IN_ERROR
from subscriptions.model import SubscriptionSpec
from subscriptions.unloaded import LOADED_AGAIN, Unloaded

log = logging.getLogger(__name__)


class UnloadedReporter:
    def __init__(self, ledger: Ledger, lifecycle: Lifecycle) -> None:
        self._ledger = ledger
        self._lifecycle = lifecycle
        self._marks = SubscriptionMarks()
        # The latest the registry said of each: a mark acts only on what is still news.
        self._news: dict[str, Unloaded | SubscriptionSpec] = {}

    def unloaded(self, item: Unloaded) -> None:
        if item.spec.status == "off":  # stays off; listed all the same
            self._news.pop(item.subscription_id, None)
            return
        self._news[item.subscription_id] = item
        self._marks.start(item.subscription_id, partial(self._mark, item))

    def loaded(self, spec: SubscriptionSpec) -> None:
        if spec.status != "error":  # its owner's update, which starts it over
            self._news.pop(spec.id, None)  # a mark not begun is stale now
            return
        self._news[spec.id] = spec
        self._marks.start(spec.id, partial(self._again, spec))

    async def _mark(self, item: Unloaded) -> None:
        subscription_id, reason = item.subscription_id, item.reason
        if not self._consume(subscription_id, item):
            return  # it loads now, or failed anew (a mark for that follows)
        progress = await self._ledger.progress(subscription_id)
        if progress is not None and (
            progress.status == "off"
            or (progress.status == "error" and progress.last_error == reason)
        ):
            return
        if not await self._lifecycle.set_error(subscription_id, reason):
            return
        SUBSCRIPTIONS_PUT_IN_ERROR.labels(item.kind).inc()
        log.warning(
            "Subscription/%s cannot be loaded: now in error, matched against nothing until "
            "it is updated",
            subscription_id,
            extra={"kind": item.kind, "element": item.element, "parameters": item.parameters},
        )

    async def _again(self, spec: SubscriptionSpec) -> None:
        subscription_id = spec.id
        if not self._consume(subscription_id, spec):
            return
        progress = await self._ledger.progress(subscription_id)
        if progress is not None and progress.status != "error":
            return  # active again, or off, meanwhile
        if await self._lifecycle.set_error(subscription_id, LOADED_AGAIN):
            log.info("Subscription/%s loads again", subscription_id)

    def _consume(self, subscription_id: str, news: Unloaded | SubscriptionSpec) -> bool:
        """Whether `news` is still the latest about the subscription (taken, if so)."""
        if self._news.get(subscription_id) is not news:
            return False
        del self._news[subscription_id]
        return True

    async def drain(self) -> None:
        """Wait for the markings under way (at stop)."""
        await self._marks.drain()
