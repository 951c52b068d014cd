"""One subscription's owed work, done in order: handshake, events, heartbeats.

`SubscriptionDelivery.step` does the next owed thing for a subscription whose lease the caller
holds (the dispatcher runs it in a loop):
1. the handshake, if the subscription has not reached its endpoint since it was (re)registered
   (a classic R4 subscription is simply activated);
2. the oldest undelivered events, a page at a time (`page.py`), up to `maxCount` per
   notification, retrying a failing endpoint with exponential backoff and jitter (`retries.py`,
   `DeliveryPolicy` in `policy.py`); the same events keep their numbers and idempotency key.
   The subscription goes to `error` on a failure and back to `active` on the next success.
   Events older than the give-up age when a retry fails are recorded as a dead letter and
   delivery moves on. A notification that cannot be built or sent at all (an
   unexpected error: a stored resource the builder chokes on, a bug in a transport) gets
   bounded tries (`channels/unprocessable.py`); then its events become a dead letter too, with
   the reason, and delivery moves on;
3. a heartbeat when `heartbeatPeriod` passed without traffic.

Every attempt to send (an `Attempt`, `attempt.py`: what, to whom, how it went, never the body)
is reported to `DeliveryPolicy.record_attempt` when set: the audit trail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from channels.attempt import Attempt
from channels.lease import Lease, LeaseLost
from channels.metrics import (
    DELIVERY_LAG,
    EVENTS_DEAD_LETTERED,
    EVENTS_DELIVERED,
    EVENTS_UNSENDABLE,
)
from channels.page import Page
from channels.policy import DeliveryPolicy
from channels.retries import Retries
from channels.transport import Delivery, Transport
from channels.unprocessable import Unsendable
from fhirstore import Gone, NotFound, Store, fhirjson
from fhirstore.db import fhir_instant
from subscriptions import (
    Ledger,
    Lifecycle,
    NotificationEvent,
    NotificationType,
    RecordedEvent,
    SubscriptionProgress,
    SubscriptionRegistry,
    SubscriptionSpec,
    classic_body,
    notification_bundle,
    notification_events,
)

log = logging.getLogger(__name__)

_PAGE = 200  # owed events read at a time


class Rewound(Exception):
    """A replay moved the subscription's delivery back while a page was being delivered."""


class Stopped(Exception):
    """The subscription was turned off, deleted or ended while a delivery was being retried."""


class SubscriptionDelivery:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        registry: SubscriptionRegistry,
        transports: dict[str, Transport],
        *,
        policy: DeliveryPolicy,
        owner: str,
        slots: asyncio.Semaphore,
    ) -> None:
        self.store = store
        self._clock = store.clock
        self.ledger = ledger
        self.lifecycle = Lifecycle(store, ledger, record=policy.record_write)
        self.registry = registry
        self.transports = transports
        self.policy = policy
        self.owner = owner
        self._retries = Retries(
            transports,
            self.lifecycle,
            self._clock,
            policy=policy,
            slots=slots,
            after_wait=self._still_owed,
        )

    async def _current(
        self, subscription_id: str, *, events: bool = False
    ) -> tuple[SubscriptionSpec, SubscriptionProgress, list[RecordedEvent]] | None:
        """The subscription, its progress and (with `events`) the page of its oldest owed
        events, read together; None when it is off, deleted or ended."""
        spec = self.registry.index.get(subscription_id)
        if spec is None:
            await self.registry.catch_up()
            spec = self.registry.index.get(subscription_id)
        limit = _page_size(spec) if spec is not None and events else 0
        progress, pending = await self.ledger.owed(subscription_id, limit)
        if progress is None or progress.status == "off":
            return None
        if spec is None:
            if await self._gone(subscription_id):
                await self.ledger.forget(subscription_id)
            return None
        return spec, progress, pending

    def nudge(self, subscription_id: str) -> None:
        """Cut short this subscription's current or next retry wait (e.g. a WebSocket was
        just bound); kept until a wait or a successful send uses it."""
        self._retries.nudge(subscription_id)

    async def _still_owed(self, subscription_id: str, lease: Lease) -> None:
        """After a wait: `LeaseLost` if another process took the subscription over, `Stopped`
        if it was turned off, deleted or ended meanwhile."""
        lease.check()
        current = await self._current(subscription_id)
        if current is None or ended(current[0], self._clock.now(), current[1]):
            raise Stopped(subscription_id)

    async def _gone(self, subscription_id: str) -> bool:
        """Whether the Subscription was deleted (not merely unusable here, e.g. its topic)."""
        try:
            await self.store.read("Subscription", subscription_id)
        except (NotFound, Gone):
            return True
        return False

    async def step(self, subscription_id: str, lease: Lease) -> bool:
        """Do the next owed thing; False when nothing more is owed as far as it read (events
        numbered since come with a wake-up, `Dispatcher.wake`)."""
        read_at = self._clock.now()  # sockets bound since then were greeted by their bind
        current = await self._current(subscription_id, events=True)
        if current is None:
            return False
        spec, progress, pending = current
        now = self._clock.now()
        if ended(spec, now, progress):
            await self.lifecycle.transition(subscription_id, "off")
            return False
        if progress.last_sent_at is None:
            if spec.channel.type != "websocket":
                await self._handshake(spec, progress, lease)
                return True
            # A client's bind sends the handshake (channels/websocket); a socket still bound
            # when the Subscription was changed gets it from here.
            if await self._greet_bound_sockets(spec, progress, read_at):
                return True
            await self._give_up_waiting(spec, progress, "no WebSocket was bound")
            return False
        if pending:
            try:
                whole = await self._deliver_page(spec, progress, pending, lease)
            except Rewound:  # a replay moved delivery: the next step sees it
                return True
            # A short page taken whole was all that was owed when it was read.
            return not whole or len(pending) == _page_size(spec)
        if heartbeat_due(spec, progress, now):
            await self._send_status(spec, progress, "heartbeat", lease)
            return True
        return False

    async def _handshake(
        self, spec: SubscriptionSpec, progress: SubscriptionProgress, lease: Lease
    ) -> None:
        if spec.classic:  # R4 has no handshake: a valid classic subscription is active at once
            await self.ledger.sent(spec.id, now=self._clock.now())
            await self.lifecycle.delivered(spec)
            return
        # Events matched meanwhile wait for the handshake, but not beyond the give-up age.
        expired: list[RecordedEvent] = []

        async def events_expired() -> bool:
            expired[:] = await self._expired(spec, progress)
            return bool(expired)

        error = await self._send_status(
            spec, progress, "handshake", lease, stop_when=events_expired
        )
        if error is not None and expired:
            problem = f"no handshake got through: {error}"
            await self._give_up(spec, expired, self._too_old(problem), progress.delivered_through)

    async def _greet_bound_sockets(
        self, spec: SubscriptionSpec, progress: SubscriptionProgress, read_at: datetime
    ) -> bool:
        """A handshake to the WebSockets bound to the subscription before `progress` was read
        (at `read_at`), once; False if none took it. A socket bound since got its handshake
        from its bind, which records it in the ledger before the socket can be found: a step
        that read the ledger before that must not greet it again."""
        sent_at = self._clock.now()
        body = self._bundle(spec, "handshake", "active", progress.events_since_start, [])
        key = f"{spec.id}:handshake:{fhir_instant(sent_at)}"
        delivery = replace(self._delivery(spec, "handshake", body, key), greeted_before=read_at)
        outcome = await self.transports["websocket"].send(delivery)
        if not outcome.ok:  # no socket took it: a check, not an attempt to report
            return False
        self.report(Attempt(spec, "handshake", (), outcome))
        await self.ledger.sent(spec.id, now=sent_at)
        if progress.status != "active":
            await self.lifecycle.delivered(spec)
        return True

    async def _expired(
        self, spec: SubscriptionSpec, progress: SubscriptionProgress
    ) -> list[RecordedEvent]:
        """The oldest owed events, those past the give-up age."""
        limit = self._clock.now() - self.policy.give_up_after
        waiting = await self.ledger.pending(spec.id, progress.delivered_through, _PAGE)
        return list(itertools.takewhile(lambda e: e.occurred_at <= limit, waiting))

    async def _give_up_waiting(
        self, spec: SubscriptionSpec, progress: SubscriptionProgress, problem: str
    ) -> None:
        expired = await self._expired(spec, progress)
        if expired:
            await self._give_up(spec, expired, self._too_old(problem), progress.delivered_through)

    async def _send_status(
        self,
        spec: SubscriptionSpec,
        progress: SubscriptionProgress,
        kind: NotificationType,
        lease: Lease,
        *,
        stop_when: Callable[[], Awaitable[bool]] | None = None,
    ) -> str | None:
        sent_at = self._clock.now()
        delivery = self.status_notification(spec, progress, kind, sent_at)
        # A handshake is retried until it gets through. A heartbeat is not: a failed one counts
        # as traffic too, so the next goes out a period later (or the next event tries sooner).
        retry = kind == "handshake"
        error, _ = await self._retries.send(
            spec, progress, delivery, lease, kind=kind, retry=retry, stop_when=stop_when
        )
        if error is None or kind == "heartbeat":
            await self.ledger.sent(spec.id, now=sent_at)
        return error

    def status_notification(
        self,
        spec: SubscriptionSpec,
        progress: SubscriptionProgress,
        kind: NotificationType,
        sent_at: datetime,
    ) -> Delivery:
        """The handshake or heartbeat of `spec` sent at `sent_at`, keyed by that time."""
        status = "requested" if kind == "handshake" else progress.status
        body = self._bundle(spec, kind, status, progress.events_since_start, [])
        key = f"{spec.id}:{kind}:{fhir_instant(sent_at)}"
        return self._delivery(spec, kind, body, key)

    async def _deliver_page(
        self,
        spec: SubscriptionSpec,
        progress: SubscriptionProgress,
        pending: Sequence[RecordedEvent],
        lease: Lease,
    ) -> bool:
        """Deliver a page of owed events, one notification (of up to maxCount events) after
        the other; whether the endpoint took every one at the first try. Progress is recorded
        every `RECORD_EVERY` seconds (`page.py`), before a retry and at the end of the page: a
        crash in between sends those notifications again, with the same keys. After a failure
        the page ends, so that the next step reads the subscription afresh."""
        size = 1 if spec.classic else spec.channel.max_count
        with_resource = spec.channel.content == "full-resource"  # a classic payload's too
        loaded = await self._page_events(pending, with_resource)
        page = Page(functools.partial(self.record_delivered, spec), progress.delivered_through)
        try:
            for start in range(0, len(pending), size):
                batch = pending[start : start + size]
                events = loaded[start : start + size] if loaded is not None else None
                sent = await self._deliver_or_set_aside(
                    spec, progress, batch, events, with_resource, lease, page.record
                )
                if isinstance(sent, Unsendable):
                    await page.record()
                    await self._set_aside(spec, batch, sent, page.through)
                    return False
                error, attempts = sent
                if error is not None:
                    await page.record()
                    await self._give_up(spec, batch, self._too_old(error), page.through)
                    return False
                page.accept(batch)
                if attempts > 1:
                    return False  # it had failed: look at the subscription afresh
                await page.record_if_due()
                lease.check()
        finally:
            await page.record()
        return True

    async def record_delivered(
        self, spec: SubscriptionSpec, through: int, events: Sequence[RecordedEvent]
    ) -> None:
        """Record `events` (right after `through`) as accepted; LeaseLost if another process
        delivers the subscription now, and `Rewound` if a replay moved delivery meanwhile."""
        now = self._clock.now()
        last = events[-1].event_number
        if not await self.ledger.delivered(spec.id, through, last, now=now, owner=self.owner):
            if not await self.ledger.claim(spec.id, self.owner, now=now, lease=self.policy.lease):
                raise LeaseLost(spec.id)
            raise Rewound(spec.id)
        count_delivered(spec, events, now)

    async def _page_events(
        self, pending: Sequence[RecordedEvent], with_resource: bool
    ) -> list[NotificationEvent] | None:
        """The page's events, focus versions read in one go; None when that fails (other than
        by an outage): then each notification reads its own, so only the one that cannot be
        built is set aside."""
        try:
            return await notification_events(
                self.store, pending, with_resource=with_resource, recent=self.ledger.recent
            )
        except Exception as error:
            outage = self.policy.unsendable.outage
            if outage is not None and await outage(error):
                raise
            return None

    async def _deliver_or_set_aside(
        self,
        spec: SubscriptionSpec,
        progress: SubscriptionProgress,
        pending: Sequence[RecordedEvent],
        events: Sequence[NotificationEvent] | None,
        with_resource: bool,
        lease: Lease,
        before_retry: Callable[[], Awaitable[object]],
    ) -> tuple[str | None, int] | Unsendable:
        """`_deliver` under bounded tries: why, when the notification could not be built or
        sent (an unexpected error) after them. Meanwhile the subscription shows `error`."""

        current = progress

        async def deliver() -> tuple[str | None, int]:
            loaded = events
            if loaded is None:
                loaded = await notification_events(self.store, pending, with_resource=with_resource)
            return await self._deliver(spec, current, pending, loaded, lease, before_retry)

        async def failed(why: Unsendable, attempt: int) -> None:
            nonlocal current
            log.warning("subscription %s: %s", spec.id, why.summary)
            if attempt == 1:
                await before_retry()  # what was accepted before it stays accepted
            await self.lifecycle.transition(spec.id, "error", error=why.summary)
            current = dataclasses.replace(current, status="error")  # a success shows `active`

        async def wait(seconds: float) -> None:
            async with self._retries.idle():  # others may deliver while this one waits
                await asyncio.sleep(seconds)
            await self._still_owed(spec.id, lease)

        return await self.policy.unsendable.run(
            deliver, pending, passes=(LeaseLost, Rewound, Stopped), failed=failed, wait=wait
        )

    async def _deliver(
        self,
        spec: SubscriptionSpec,
        progress: SubscriptionProgress,
        pending: Sequence[RecordedEvent],
        events: Sequence[NotificationEvent],
        lease: Lease,
        before_retry: Callable[[], Awaitable[object]],
    ) -> tuple[str | None, int]:
        """Send one notification of `pending` (as `events`, retrying): (last error or None,
        attempts)."""
        return await self._retries.send(
            spec,
            progress,
            self.notification(spec, progress, pending, events),
            lease,
            kind="event-notification",
            events=pending,
            give_up_from=pending[0].occurred_at,
            before_retry=before_retry,
        )

    def notification(
        self,
        spec: SubscriptionSpec,
        progress: SubscriptionProgress,
        pending: Sequence[RecordedEvent],
        events: Sequence[NotificationEvent],
    ) -> Delivery:
        """The event notification of `pending` (as `events`), keyed by their numbers."""
        first, last = pending[0].event_number, pending[-1].event_number
        if spec.classic:
            payload = classic_body(spec, events[0])
        else:
            payload = self._bundle(spec, "event-notification", progress.status, last, events)
        key = f"{spec.id}:{first}" if first == last else f"{spec.id}:{first}-{last}"
        return self._delivery(spec, "event-notification", payload, key)

    def report(self, attempt: Attempt) -> None:
        """Tell the audit trail of `attempt` and count it."""
        self._retries.report(attempt)

    def _too_old(self, error: str) -> str:
        return f"not delivered within {self.policy.give_up_after}: {error}"

    async def _set_aside(
        self,
        spec: SubscriptionSpec,
        events: Sequence[RecordedEvent],
        why: Unsendable,
        through: int,
    ) -> None:
        """A dead letter of events whose notification could not be built or sent; the status
        says so until the next delivery gets through."""
        if await self._give_up(spec, events, why.detail, through):
            EVENTS_UNSENDABLE.labels(spec.channel.type).inc(len(events))
            problem = f"{why.summary}; set aside as a dead letter, later events go on"
            await self.lifecycle.transition(spec.id, "error", error=problem)

    async def _give_up(
        self,
        spec: SubscriptionSpec,
        events: Sequence[RecordedEvent],
        reason: str,
        through: int,
    ) -> bool:
        """Record `events` as a dead letter with `reason` and move delivery past them; False
        when delivery had moved meanwhile. The log names the events, not the reason (it may
        quote what the endpoint answered)."""
        first, last = events[0].event_number, events[-1].event_number
        now = self._clock.now()
        if not await self.ledger.give_up(
            spec.id, through, first, last, reason, now=now, owner=self.owner
        ):
            return False  # delivery moved meanwhile (a replay, or another process): look again
        EVENTS_DEAD_LETTERED.inc(len(events))
        log.warning(
            "subscription %s: gave up events %d-%d; $status and $events say why",
            spec.id,
            first,
            last,
        )
        return True

    def _delivery(
        self, spec: SubscriptionSpec, kind: NotificationType, body: bytes | None, key: str
    ) -> Delivery:
        channel = spec.channel
        return Delivery(
            subscription_id=spec.id,
            kind=kind,
            endpoint=channel.endpoint,
            body=body,
            content_type=channel.payload if body is not None else None,
            headers=channel.headers,
            idempotency_key=key,
            secret=spec.secret,
            timeout=float(channel.timeout or self.policy.default_timeout),
            mail_body=channel.mail_body or "text/plain",
            attach=channel.attach or channel.mail_body is None,
        )

    def _bundle(
        self,
        spec: SubscriptionSpec,
        kind: NotificationType,
        status: str,
        events_since_start: int,
        events: Sequence[NotificationEvent],
    ) -> bytes:
        bundle = notification_bundle(
            spec,
            notification_type=kind,
            status=status,
            events_since_start=events_since_start,
            events=events,
            base_url=self.policy.base_url,
            now=self._clock.now(),
        )
        return fhirjson.dumps(bundle)


def count_delivered(spec: SubscriptionSpec, events: Sequence[RecordedEvent], now: datetime) -> None:
    """The metrics of `events` recorded as delivered at `now`."""
    EVENTS_DELIVERED.labels(spec.channel.type).inc(len(events))
    for event in events:
        DELIVERY_LAG.observe((now - event.occurred_at).total_seconds())


def _page_size(spec: SubscriptionSpec) -> int:
    """Owed events read at a time: about `_PAGE`, whole notifications of up to maxCount."""
    size = 1 if spec.classic else spec.channel.max_count
    return max(size, _PAGE // size * size)


def heartbeat_due(spec: SubscriptionSpec, progress: SubscriptionProgress, now: datetime) -> bool:
    period = spec.channel.heartbeat_period
    return bool(
        period
        and progress.status in ("active", "error")
        and progress.last_sent_at is not None
        and now - progress.last_sent_at >= timedelta(seconds=period)
    )


def ended(spec: SubscriptionSpec, now: datetime, progress: SubscriptionProgress) -> bool:
    return spec.end is not None and spec.end <= now and progress.status != "off"
