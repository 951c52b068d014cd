"""Sending one notification until its endpoint takes it: the delivery core's retry loop.

`Retries.send` hands a `Delivery` to its channel's transport and reports every try (an
`Attempt`). On a failure it waits (`DeliveryPolicy.backoff`: exponential, with jitter; at
once the longest wait when the failure is permanent, one that needs someone to change
something), giving this worker's delivery slot to others meanwhile, and tries again, until the
endpoint takes it, the events pass the give-up age, or the caller says stop. `nudge` cuts a
subscription's current or next wait short (e.g. a WebSocket was just bound). The
subscription's status follows: `error` on a failure (with the failure's kind, which `$status`
codes; written again when the kind changes), `active` on a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime

from channels.attempt import Attempt, try_send
from channels.lease import Lease
from channels.metrics import NOTIFICATIONS_SENT
from channels.policy import DeliveryPolicy
from channels.transport import Delivery, Transport
from fhirstore import Clock
from subscriptions import (
    Lifecycle,
    NotificationType,
    RecordedEvent,
    SubscriptionProgress,
    SubscriptionSpec,
)

log = logging.getLogger(__name__)

# After each wait: raises when delivery of the subscription must stop (lease lost, turned off).
AfterWait = Callable[[str, Lease], Awaitable[None]]


class Retries:
    def __init__(
        self,
        transports: dict[str, Transport],
        lifecycle: Lifecycle,
        clock: Clock,
        *,
        policy: DeliveryPolicy,
        slots: asyncio.Semaphore,
        after_wait: AfterWait,
    ) -> None:
        self._transports = transports
        self._lifecycle = lifecycle
        self._clock = clock
        self._policy = policy
        self._slots = slots
        self._after_wait = after_wait
        self._nudges: dict[str, asyncio.Event] = {}  # retry waits to cut short

    async def send(
        self,
        spec: SubscriptionSpec,
        progress: SubscriptionProgress,
        delivery: Delivery,
        lease: Lease,
        *,
        kind: NotificationType,
        events: Sequence[RecordedEvent] = (),
        retry: bool = True,
        give_up_from: datetime | None = None,
        before_retry: Callable[[], Awaitable[object]] | None = None,
        stop_when: Callable[[], Awaitable[bool]] | None = None,
    ) -> tuple[str | None, int]:
        """Send, retrying (when `retry`) until the endpoint takes it or the events, which
        occurred at `give_up_from`, pass the give-up age: (None when delivered, else the last
        error; the number of attempts). The status follows: `error` on a failure, `active` on
        a success. Retries stop when `after_wait` raises (the subscription was turned off,
        deleted or ended meanwhile), and (returning the error) when `stop_when` says so. Each
        attempt is reported with `events`, those the notification carries."""
        transport = self._transports[spec.channel.type]
        status, tries = progress.status, 0
        shown = progress.last_failure  # the kind of failure the status shows
        while True:
            outcome = await try_send(transport, delivery)
            self.report(Attempt(spec, kind, events, outcome))
            if outcome.ok:
                self._nudges.pop(spec.id, None)  # nothing to cut short any more
                if status != "active":
                    await self._lifecycle.delivered(spec)
                return None, tries + 1
            error = outcome.error or "delivery failed"
            failure = outcome.failure.value if outcome.failure is not None else None
            if status != "error" or failure != shown:  # the status shows the failure's kind
                await self._lifecycle.transition(spec.id, "error", error=error, failure=failure)
                status, shown = "error", failure
            tries += 1
            # The error text stays out of the log: it quotes the endpoint's answer, which may
            # echo the notification. `$status` shows it to the subscription's owner.
            log.info(
                "subscription %s: delivery failed (attempt %d, reply %s)",
                spec.id,
                tries,
                outcome.status_code or "none",
            )
            expired = give_up_from is not None and (
                self._clock.now() - give_up_from >= self._policy.give_up_after
            )
            if not retry or expired or (stop_when is not None and await stop_when()):
                return error, tries
            if tries == 1 and before_retry is not None:
                await before_retry()
            async with self.idle():  # others may deliver while this one waits
                wait = self._policy.backoff(tries - 1, outcome.failure)
                await self._wait_or_nudge(spec.id, wait)
            await self._after_wait(spec.id, lease)

    def report(self, attempt: Attempt) -> None:
        """Tell the policy's `record_attempt` (the audit trail) of `attempt`, and count it."""
        NOTIFICATIONS_SENT.labels(
            attempt.spec.channel.type, attempt.kind, "ok" if attempt.outcome.ok else "failed"
        ).inc()
        if self._policy.record_attempt is not None:
            self._policy.record_attempt(attempt)

    def nudge(self, subscription_id: str) -> None:
        """Cut short this subscription's current or next retry wait (e.g. a WebSocket was
        just bound); kept until a wait or a successful send uses it."""
        self._nudges.setdefault(subscription_id, asyncio.Event()).set()

    async def _wait_or_nudge(self, subscription_id: str, seconds: float) -> None:
        nudged = self._nudges.setdefault(subscription_id, asyncio.Event())
        try:
            async with asyncio.timeout(seconds):
                await nudged.wait()
        except TimeoutError:
            pass
        finally:
            self._nudges.pop(subscription_id, None)

    @contextlib.asynccontextmanager
    async def idle(self) -> AsyncIterator[None]:
        """Give this worker's delivery slot to others for a while (it keeps its lease)."""
        self._slots.release()
        try:
            yield
        finally:
            await self._slots.acquire()
