"""The scheduler as it runs: CarePlan changes from the stream, due wake-ups, sweeps.

- Every CarePlan change on `fhir.changes` (consumer group `herald-scheduler`) reconciles that
  CarePlan at once; a Patient change reconciles the Patient's CarePlans (the time zone may have
  changed), unless it creates the Patient in the default zone (scheduler/changes.py); a change
  to a request of a type Herald schedules from (`scheduler.requests.READERS`) reconciles the
  CarePlans last planned from it, found in the scheduler's reference rows (not the search
  index), which hold a request not stored yet too, so its creation is heard (one stored while
  its CarePlan was being planned may go unheard: the next sweep sees it). Other changes are
  skipped by their key, unread. The CarePlans of a batch's Patients and requests are found
  with one statement (per 500 of them). A change whose CarePlan cannot be reconciled fails,
  is retried and then quarantined by the bus (`events/quarantine`).
- Due wake-ups every `due_interval` seconds, in every scheduler process.
- The sweep every `sweep_interval` seconds, at start and whenever this process becomes the
  leader, run only by the leader (a PostgreSQL advisory lock; SQLite: the one process). The
  sweep rolls the horizon forward and is the polling reconciliation that repairs whatever the
  stream missed. It reconciles only the CarePlans that may have something to do, and leaves
  those that provably have nothing to do alone (scheduler/settled.py); a full sweep reconciles
  every one.

Both are loops of the periodic-loop helper (`fhirstore/periodic.py`) on the injected clock, so
tests move time to run them. The sweep was an APScheduler 3.x interval job; it is a loop now
because APScheduler's strengths buy it nothing: a persistent job store would remember a job
that is defined in code and the same at every start, and a missed-run policy (coalesce, run
once at start) is what the loop does anyway, since the sweep runs at every start and every
gain of leadership and is idempotent. What must survive a restart (which Tasks exist, which
occurrences were woken) lives in the scheduler's own tables, not in a job store. One loop
helper and one clock for every loop also lets tests move time for the sweep as for the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from datetime import timedelta

from events.bus import Bus, Message
from fhirstore import Periodic, Store, run_in_background
from fhirstore.access import Record
from fhirstore.db import SCHEDULER_LOCK_KEY, BulkStatistics, Leadership
from fhirstore.wire import CHANGES_TOPIC, SCHEDULER_GROUP
from scheduler.bookkeeping import (
    careplan_ids,
    count_careplans,
    forget_tasks,
    plans_concerned,
    skipped_activities,
)
from scheduler.changes import concerned
from scheduler.due import DueTasks
from scheduler.identity import acting_as_scheduler
from scheduler.metrics import SCHEDULER_LEADER, SWEEP_REPAIRS, SWEEP_SECONDS, TASKS_WRITTEN
from scheduler.policy import SchedulePolicy
from scheduler.reconcile import Reconciler
from scheduler.repairs import Repairs
from scheduler.settled import settled
from scheduler.tables import schedule_plans, schedule_tasks

log = logging.getLogger(__name__)

SWEEP_PAGE = 500  # CarePlan ids read per page of a sweep
# Rows of occurrences this long past their grace period are dropped (the Tasks stay).
ROW_RETENTION = timedelta(days=1)

Progress = Callable[[int, int, Repairs], None]  # (CarePlans done, CarePlans in all, so far)


class Scheduler:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        policy: SchedulePolicy,
        *,
        sweep_interval: float = 300.0,
        due_interval: float = 1.0,
        audit: Record | None = None,
    ) -> None:
        """`audit` records each Task write the scheduler makes (`fhirstore/access/acting.py`)."""
        self._store = store
        self._bus = bus
        self._policy = policy
        acting = acting_as_scheduler(store, audit)
        self.reconciler = Reconciler(store, policy, acting=acting)
        self.due = DueTasks(store, policy, acting=acting)
        self.leadership = Leadership(
            store.engine,
            SCHEDULER_LOCK_KEY,
            "scheduler",
            clock=store.clock,
            on_change=self._leading,
        )
        # A wake-up pass is short (a tick is a second); one that runs over only delays the next.
        self.wakeups = Periodic(
            "scheduler: due wake-ups",
            self.due.wake,
            interval=due_interval,
            clock=store.clock,
        )
        self.sweeps = Periodic(
            "scheduler: sweep",
            self._sweep_if_leading,
            interval=sweep_interval,
            clock=store.clock,
        )

    def subscribe(self) -> None:
        self._bus.subscribe_batch(CHANGES_TOPIC, SCHEDULER_GROUP, self.handle)

    async def handle(self, messages: Sequence[Message]) -> None:
        """Reconcile the CarePlans these changes concern, found with one lookup per batch."""
        found = concerned(messages, self._policy.default_zone)
        careplans = found.careplans
        if found.patients or found.requests:
            async with self._store.engine.connect() as conn:
                careplans |= await plans_concerned(
                    conn, sorted(found.patients), sorted(found.requests)
                )
        if careplans:
            # Strict: a CarePlan that cannot be reconciled fails its change, which the bus
            # retries and then quarantines (events/quarantine), rather than skipping it unseen.
            _count(await self.reconciler.reconcile(sorted(careplans), strict=True), "change")

    async def start(self, stack: AsyncExitStack) -> None:
        """Contend for leadership, wake what is due and sweep (at once: catch up on what
        happened meanwhile), until `stack` closes."""
        self._leading(self.leadership.leading)
        run_in_background(stack, "scheduler-leader", self.leadership.run)
        run_in_background(stack, "scheduler-due", self.wakeups.run)
        run_in_background(stack, "scheduler-sweep", self.sweeps.run)

    async def sweep(self, progress: Progress | None = None, *, full: bool = False) -> Repairs:
        """Reconcile every CarePlan (live, deleted, or only known to the scheduler) that may
        have something to do; with `full`, every one, planned afresh."""
        began = time.monotonic()
        async with self._store.engine.connect() as conn:
            total = await count_careplans(conn)
        repairs = Repairs()
        statistics = BulkStatistics(self._store.engine, _READ_WHILE_WRITING)
        after = ""
        done = 0
        while True:
            async with self._store.engine.connect() as conn:
                page = await careplan_ids(conn, after=after, limit=SWEEP_PAGE)
                if not page:
                    break
                now = self._store.clock.now()
                skip = set() if full else await settled(conn, page, now=now, policy=self._policy)
            reconciled = await self.reconciler.reconcile([i for i in page if i not in skip])
            await statistics.written(reconciled.writes)
            repairs += reconciled
            repairs.settled_plans += len(skip)
            done += len(page)
            after = page[-1]
            if progress is not None:
                progress(done, max(total, done), repairs)
        async with self._store.write_transaction() as conn:
            forgotten = await forget_tasks(
                conn, self._store.clock.now() - self._policy.grace - ROW_RETENTION
            )
        SWEEP_SECONDS.observe(time.monotonic() - began)
        _count(repairs, "sweep")
        for kind, n in repairs.counts().items():
            if n and kind not in ("plans", "settled_plans", "created"):
                SWEEP_REPAIRS.labels(kind).inc(n)
        log.info(
            "scheduler sweep: %d CarePlans in %.1fs",
            done,
            time.monotonic() - began,
            # Nested: a count named like a LogRecord attribute (`created`) may not be an extra.
            extra={"repairs": repairs.counts(), "forgotten_rows": forgotten},
        )
        return repairs

    async def skipped(self) -> list[tuple[str, str | None, str]]:
        """What scheduled CarePlans could not materialise, as of their last reconciliation."""
        async with self._store.engine.connect() as conn:
            return await skipped_activities(conn)

    async def _sweep_if_leading(self) -> None:
        if self.leadership.leading:
            await self.sweep()

    def _leading(self, leading: bool) -> None:
        SCHEDULER_LEADER.set(1 if leading else 0)
        if leading:  # a new leader sweeps at once
            self.sweeps.wake()


# What reconciliation reads of what it wrote earlier in the same sweep (besides the store's
# resource tables, which BulkStatistics analyzes anyway).
_READ_WHILE_WRITING = (schedule_tasks, schedule_plans)


def _count(repairs: Repairs, cause: str) -> None:
    for kind, n in repairs.task_counts().items():
        if n:
            TASKS_WRITTEN.labels(kind, cause).inc(n)
