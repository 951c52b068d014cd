"""Delivery rounds: many subscriptions' one owed notification each, in a few statements.

When a wave of changes owes each of many subscriptions one notification (every patient's
reminder falling due in the same minute), a worker per subscription (`dispatcher.py`) pays,
for each, a task, a lease claim, a read, a progress write and a release. A round does the plain
cases of up to `ROUND` woken subscriptions together:
1. claims their leases in one statement (those another live process holds are left to it);
2. reads their progress and owed events in one go;
3. sends, side by side within the dispatcher's delivery slots (and the transport's limits per
   host), one notification to each `active` subscription whose owed events fit one (up to
   maxCount), built as its worker builds it and reported to the audit trail as its worker
   reports it (`SubscriptionDelivery`);
4. records the notifications the endpoints took as delivered, in one statement, and releases
   those leases in one more.

A subscription just registered (`requested`, never reached) gets its handshake the same way,
side by side with the others': those the endpoints took are recorded as traffic in one
statement, then `active` in one more and on their resources in one transaction
(`Lifecycle.delivered_many`). Its owed events, if any, go to its worker after the handshake.

Everything else goes, lease held, to the subscription's own worker, which does it as it always
has: a handshake that failed (the worker sends it again at once, then retries it with backoff
and `error` status) or is owed by a subscription in `error`, a heartbeat, more owed than one
notification, a subscription in `error`, off or ended; a WebSocket or classic R4 subscription;
a notification that could not be built; a send that failed or did not end within a third of
the lease (the worker sends the same notification again, same key, and retries it with
backoff, `error` status and dead letters); progress that moved meanwhile (a replay); and a
subscription woken again during the round that owes events again, which is busy, so a worker
that lingers on its lease serves it better (one that owes nothing waits in line for the next
round).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from channels.attempt import Attempt, try_send
from channels.delivery import SubscriptionDelivery, count_delivered, ended, heartbeat_due
from channels.transport import Delivery, Outcome
from subscriptions import (
    RecordedEvent,
    SubscriptionProgress,
    SubscriptionSpec,
    notification_events,
)

ROUND = 256  # subscriptions a round takes at most
ROUNDS_AT_ONCE = 4  # rounds a dispatcher runs side by side


@dataclass(frozen=True, slots=True)
class _Owed:
    """A subscription's one owed notification, as a round sends it."""

    spec: SubscriptionSpec
    progress: SubscriptionProgress
    events: list[RecordedEvent]


class DeliveryRounds:
    def __init__(self, delivery: SubscriptionDelivery, *, slots: asyncio.Semaphore) -> None:
        self._delivery = delivery
        self._clock = delivery.store.clock
        self._ledger = delivery.ledger
        self._slots = slots

    async def run(self, subscription_ids: Sequence[str], woken: Callable[[str], bool]) -> list[str]:
        """A round over `subscription_ids`; those left to their workers, whose leases this
        process holds (`woken` says which were woken again meanwhile)."""
        owner = self._delivery.owner
        claimed = await self._ledger.claim_many(
            subscription_ids, owner, now=self._clock.now(), lease=self._delivery.policy.lease
        )
        held = [i for i in subscription_ids if i in claimed]
        try:
            done, to_workers = await self._deliver(held)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._ledger.release_many(held, owner))
            raise
        again = [i for i in done if woken(i)]
        if again:
            # Woken for what the round just delivered (a sweep's read and the change's job
            # raced), a subscription goes to the next round; one still owing is busy.
            progress = await self._ledger.progress_of(again)
            to_workers += [i for i in again if (p := progress.get(i)) is None or p.owed > 0]
        release = [i for i in done if i not in to_workers]
        if release:
            await self._ledger.release_many(release, owner)
        return to_workers

    async def _deliver(self, held: list[str]) -> tuple[list[str], list[str]]:
        """(the subscriptions done with, those for their workers)."""
        specs = {i: self._delivery.registry.index.get(i) for i in held}
        plain = {i: s for i, s in specs.items() if s is not None and _plain(s)}
        to_workers = [i for i in held if i not in plain]
        limit = max((s.channel.max_count for s in plain.values()), default=0)
        owed = await self._ledger.owed_many(list(plain), limit)
        now = self._clock.now()
        done: list[str] = []
        sends: dict[str, _Owed] = {}
        handshakes: dict[str, _Owed] = {}
        for i, spec in plain.items():
            progress, events = owed.get(i, (None, []))
            if progress is not None and progress.status == "off":
                done.append(i)  # nothing to do, as its worker would find
            elif progress is not None and _handshake_owed(spec, progress, now):
                handshakes[i] = _Owed(spec, progress, [])
            elif (
                progress is None
                or progress.status != "active"
                or progress.last_sent_at is None
                or ended(spec, now, progress)
                or progress.owed > spec.channel.max_count
                or len(events) != progress.owed
            ):
                to_workers.append(i)
            elif events:
                sends[i] = _Owed(spec, progress, events)
            elif heartbeat_due(spec, progress, now):
                to_workers.append(i)
            else:
                done.append(i)
        greeted, accepted = await asyncio.gather(
            self._handshake(handshakes), self._send(sends, await self._notifications(sends))
        )
        to_workers += [i for i in handshakes if i not in greeted]
        # Events owed beyond the handshake are its worker's (they come after it).
        done += [i for i in greeted if handshakes[i].progress.owed == 0]
        to_workers += [i for i in greeted if handshakes[i].progress.owed > 0]
        to_workers += [i for i in sends if i not in accepted]
        recorded = await self._record({i: sends[i] for i in accepted})
        to_workers += [i for i in accepted if i not in recorded]
        return done + sorted(recorded), to_workers

    async def _handshake(self, handshakes: dict[str, _Owed]) -> set[str]:
        """Send each subscription its handshake, side by side, and record those the endpoint
        took (traffic, then `active`) in a few statements; the subscriptions recorded."""
        if not handshakes:
            return set()
        sent_at = self._clock.now()
        notify = self._delivery.status_notification
        deliveries = {
            i: notify(o.spec, o.progress, "handshake", sent_at) for i, o in handshakes.items()
        }
        accepted = await self._send(handshakes, deliveries)
        if not accepted:
            return set()
        owner = self._delivery.owner
        recorded = await self._ledger.sent_many(sorted(accepted), now=sent_at, owner=owner)
        await self._delivery.lifecycle.delivered_many([handshakes[i].spec for i in recorded])
        return recorded

    async def _send(self, sends: dict[str, _Owed], deliveries: dict[str, Delivery]) -> set[str]:
        """Send each of `deliveries` once, side by side; the subscriptions whose endpoint took
        it."""
        tasks = {
            asyncio.create_task(self._send_one(sends[i], d), name=f"round-{i}"): i
            for i, d in deliveries.items()
        }
        if not tasks:
            return set()
        finished, unfinished = await asyncio.wait(
            tasks, timeout=self._delivery.policy.lease.total_seconds() / 3
        )
        for task in unfinished:  # the worker sends it again
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        return {tasks[t] for t in finished if t.result()}

    async def _send_one(self, owed: _Owed, delivery: Delivery) -> bool:
        transport = self._delivery.transports[owed.spec.channel.type]
        async with self._slots:
            try:
                outcome: Outcome = await try_send(transport, delivery)
            except Exception:  # its worker's bounded tries deal with it
                return False
        self._delivery.report(Attempt(owed.spec, delivery.kind, owed.events, outcome))
        return outcome.ok

    async def _notifications(self, sends: dict[str, _Owed]) -> dict[str, Delivery]:
        """The notifications, focus versions read in one go per kind of payload; none for a
        subscription whose events could not be read (its worker tells why)."""
        deliveries: dict[str, Delivery] = {}
        for with_resource in (False, True):
            group = [
                o
                for o in sends.values()
                if (o.spec.channel.content == "full-resource") is with_resource
            ]
            pending = [e for o in group for e in o.events]
            if not pending:
                continue
            try:
                loaded = await notification_events(
                    self._delivery.store,
                    pending,
                    with_resource=with_resource,
                    recent=self._ledger.recent,
                )
            except Exception:
                continue
            start = 0
            for o in group:
                events = loaded[start : start + len(o.events)]
                start += len(o.events)
                deliveries[o.spec.id] = self._delivery.notification(
                    o.spec, o.progress, o.events, events
                )
        return deliveries

    async def _record(self, accepted: dict[str, _Owed]) -> set[str]:
        """Record the accepted notifications; the subscriptions recorded."""
        if not accepted:
            return set()
        now = self._clock.now()
        through = {
            i: (o.progress.delivered_through, o.events[-1].event_number)
            for i, o in accepted.items()
        }
        recorded = await self._ledger.delivered_many(through, now=now, owner=self._delivery.owner)
        for i in recorded:
            count_delivered(accepted[i].spec, accepted[i].events, now)
        return recorded


def _handshake_owed(spec: SubscriptionSpec, progress: SubscriptionProgress, now: datetime) -> bool:
    """Whether the subscription was just registered and owes only its first handshake (one
    that failed before, shown as `error`, is retried by its worker)."""
    return (
        progress.status == "requested"
        and progress.last_sent_at is None
        and not ended(spec, now, progress)
    )


def _plain(spec: SubscriptionSpec) -> bool:
    """Whether a round may deliver the subscription (else only its worker does)."""
    return not spec.classic and spec.channel.type != "websocket"
