"""The dispatcher: delivers every subscription with something owed, in rounds or by its worker.

Subscriptions are woken by a notification job (the matcher's wake-up) or by the sweep, which
also finds work a crashed process left behind once its lease expired, heartbeats that are due
and `end`s that passed. A woken subscription without a worker waits for the next delivery
round (`rounds.py`), which takes many at once and delivers the plain cases (one notification
owed to an active endpoint that takes it) with a few statements for all, and hands every other
case to the subscription's own worker. A worker holds that subscription's lease in the ledger
while it works (so no two processes deliver the same subscription side by side) and runs
`SubscriptionDelivery.step` until nothing is owed, then keeps the lease a moment in case more
comes: a woken subscription with a worker is the worker's. One slow endpoint delays nobody
else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Sequence

from channels.delivery import Stopped, SubscriptionDelivery, ended, heartbeat_due
from channels.lease import LeaseLost, held_lease
from channels.metrics import DELIVERY_WORKERS
from channels.policy import DeliveryPolicy
from channels.rounds import ROUND, ROUNDS_AT_ONCE, DeliveryRounds
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
        self._rounds = DeliveryRounds(self._delivery, slots=self._slots)
        # Woken subscriptions without a worker, in the order woken, for the next round.
        self._woken: dict[str, None] = {}
        self._in_round: set[str] = set()  # those a round is delivering
        self._rounds_running: set[asyncio.Task[None]] = set()
        self._round_starting = False  # a round task that has not taken its share yet
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
        self._woken[subscription_id] = None
        self._start_round()

    def _start_worker(self, subscription_id: str) -> None:
        self._woken.pop(subscription_id, None)  # the worker reads what is owed afresh
        wake = asyncio.Event()
        task = asyncio.create_task(
            self._work(subscription_id, wake), name=f"deliver-{subscription_id}"
        )
        self._workers[subscription_id] = (task, wake)

    def _start_round(self) -> None:
        """Start a round unless one is about to take what is woken. Rounds run side by side
        (each on different subscriptions, at most `ROUNDS_AT_ONCE`), so a slow endpoint in one
        does not hold up the others."""
        if self._round_starting or self._stopping or len(self._rounds_running) >= ROUNDS_AT_ONCE:
            return
        self._round_starting = True
        task = asyncio.create_task(self._round(), name="delivery-round")
        self._rounds_running.add(task)
        task.add_done_callback(self._rounds_running.discard)

    async def _round(self) -> None:
        """One round over up to `ROUND` woken subscriptions that no round delivers; one that
        fails leaves its subscriptions to their workers."""
        self._round_starting = False
        idle = (i for i in self._woken if i not in self._in_round)
        taken = list(itertools.islice(idle, ROUND))
        if not taken:
            return
        for subscription_id in taken:
            del self._woken[subscription_id]
        self._in_round.update(taken)
        if self._woken:
            self._start_round()
        try:
            to_workers = await self._rounds.run(taken, woken=self._woken.__contains__)
        except Exception:
            log.exception("a delivery round failed; its subscriptions' workers go on")
            to_workers = taken
        finally:
            self._in_round.difference_update(taken)
        for subscription_id in to_workers:
            if not self._stopping and subscription_id not in self._workers:
                self._start_worker(subscription_id)
        self._rounds_running.discard(asyncio.current_task())  # its successor may start
        if any(i not in self._in_round for i in self._woken):
            self._start_round()

    async def run(self) -> None:
        """Sweep forever: restart owed work, heartbeats, `end`, retention (cancel to stop)."""
        try:
            await self.sweeps.run()
        finally:
            await self.stop()

    async def stop(self) -> None:
        self._stopping = True
        tasks = [task for task, _ in self._workers.values()]
        tasks.extend(self._rounds_running)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def sweep(self) -> None:
        await self._registry.catch_up()  # changes to subscriptions made through other processes
        now = self._clock.now()
        for progress in await self._ledger.owing(self.owner, now=now):
            # Read before a round took it, perhaps: what a round is delivering stays with the
            # round (woken, it would go on to a worker of its own once the round ends).
            if progress.subscription_id not in self._in_round:
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
