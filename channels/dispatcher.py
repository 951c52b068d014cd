"""The dispatcher: runs one delivery worker per subscription with something owed.

A worker holds that subscription's lease in the ledger while it works (so no two processes
deliver the same subscription side by side) and runs `SubscriptionDelivery.step` until nothing
is owed, then keeps the lease a moment in case more comes. One slow endpoint delays nobody
else. Workers start on a notification job (the matcher's wake-up) or from the sweep, which also
finds work a crashed process left behind once its lease expired, heartbeats that are due and
`end`s that passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence

from channels.delivery import Stopped, SubscriptionDelivery, ended, heartbeat_due
from channels.lease import LeaseLost, held_lease
from channels.metrics import DELIVERY_WORKERS
from channels.policy import DeliveryPolicy
from channels.transport import Transport
from events.bus import Bus, Message, Unprocessable
from fhirstore import Periodic, Store, sleep_or_wake
from fhirstore.wire import DISPATCHER_GROUP, NOTIFICATIONS_TOPIC
from subscriptions import Ledger, SubscriptionRegistry, read_job

log = logging.getLogger(__name__)


def new_owner() -> str:
    return f"dispatcher-{uuid.uuid4().hex[:12]}"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        registry: SubscriptionRegistry,
        transports: dict[str, Transport],
        bus: Bus,
        *,
        policy: DeliveryPolicy,
        owner: str | None = None,
    ) -> None:
        self._clock = store.clock
        self._ledger = ledger
        self._registry = registry
        self._bus = bus
        self._policy = policy
        self.owner = owner or new_owner()
        self._workers: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        # Subscriptions delivered at once by this process (each holds a database connection
        # now and then and, while sending, an HTTP connection). A worker waiting to retry or
        # lingering gives its slot back.
        self._slots = asyncio.Semaphore(policy.max_workers)
        self._delivery = SubscriptionDelivery(
            store, ledger, registry, transports, policy=policy, owner=self.owner, slots=self._slots
        )
        self._last_prune = float("-inf")
        self._stopping = False
        self.sweeps = Periodic(
            "dispatcher sweep", self.sweep, interval=policy.sweep_interval, clock=self._clock
        )

    def subscribe(self) -> None:
        self._bus.subscribe_batch(NOTIFICATIONS_TOPIC, DISPATCHER_GROUP, self.handle)

    async def handle(self, messages: Sequence[Message]) -> None:
        for message in messages:
            try:
                job = read_job(message)
            except ValueError as error:  # pydantic's ValidationError is one
                raise Unprocessable("not a notification job") from error  # quarantined
            if job.retry_now:
                self._delivery.nudge(job.subscription_id)
            self.wake(job.subscription_id)

    def wake(self, subscription_id: str) -> None:
        """Make sure a worker looks at this subscription soon."""
        if self._stopping:
            return
        running = self._workers.get(subscription_id)
        if running is not None:
            running[1].set()
            return
        wake = asyncio.Event()
        task = asyncio.create_task(
            self._work(subscription_id, wake), name=f"deliver-{subscription_id}"
        )
        self._workers[subscription_id] = (task, wake)

    async def run(self) -> None:
        """Sweep forever: restart owed work, heartbeats, `end`, retention (cancel to stop)."""
        try:
            await self.sweeps.run()
        finally:
            await self.stop()

    async def stop(self) -> None:
        self._stopping = True
        tasks = [task for task, _ in self._workers.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def sweep(self) -> None:
        await self._registry.catch_up()  # changes to subscriptions made through other processes
        now = self._clock.now()
        for progress in await self._ledger.owing(self.owner, now=now):
            self.wake(progress.subscription_id)
        timed = [s.id for s in self._registry.index.specs() if s.channel.heartbeat_period or s.end]
        if timed:
            for progress in (await self._ledger.progress_of(timed)).values():
                spec = self._registry.index.get(progress.subscription_id)
                if spec is not None and (
                    heartbeat_due(spec, progress, now) or ended(spec, now, progress)
                ):
                    self.wake(spec.id)
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_prune >= self._policy.prune_interval:
            self._last_prune = loop_now
            pruned = await self._ledger.prune(now - self._policy.retention)
            if pruned:
                log.info("pruned %d delivered subscription events", pruned)

    # -- one subscription ---------------------------------------------------------------------

    async def _work(self, subscription_id: str, wake: asyncio.Event) -> None:
        DELIVERY_WORKERS.inc()
        try:
            while True:
                wake.clear()
                await self._work_once(subscription_id, wake)
                if not wake.is_set():
                    return
        except asyncio.CancelledError:
            raise
        except LeaseLost:
            log.info("subscription %s: another dispatcher took over", subscription_id)
        except Stopped:
            log.info("subscription %s: stopped retrying, it is off or gone", subscription_id)
        except Exception:
            log.exception(
                "subscription %s: delivery worker failed; the sweep restarts it", subscription_id
            )
        finally:
            self._workers.pop(subscription_id, None)
            DELIVERY_WORKERS.dec()

    async def _work_once(self, subscription_id: str, wake: asyncio.Event) -> None:
        async with (
            self._slots,
            held_lease(
                self._ledger, subscription_id, self.owner, self._clock, self._policy.lease
            ) as lease,
        ):
            if lease is None:
                return  # another process delivers it
            while True:
                wake.clear()
                while await self._delivery.step(subscription_id, lease):
                    lease.check()
                # Under steady traffic the next event is moments away: keep the lease (not the
                # slot) a while rather than paying a release and a claim per event.
                self._slots.release()  # lingering needs no slot
                try:
                    woken = await sleep_or_wake(self._clock, self._policy.linger, wake)
                finally:
                    await self._slots.acquire()
                if not woken:
                    return
                lease.check()
