"""The scheduler as it runs: CarePlan changes from the stream, due wake-ups, sweeps.

- Every CarePlan change on `fhir.changes` (consumer group `herald-scheduler`) reconciles that
  CarePlan at once; a Patient change reconciles the Patient's CarePlans (the time zone may have
  changed). Other changes are skipped by their key, unread. A change whose CarePlan cannot be
  reconciled fails, is retried and then quarantined by the bus (`events/quarantine`).
- Due wake-ups every `due_interval` seconds (a loop), in every scheduler process.
- An APScheduler 3.x job: the sweep every `sweep_interval` seconds (and at start), run only by
  the leader (a PostgreSQL advisory lock; SQLite: the one process). The sweep rolls the horizon
  forward and is the polling reconciliation that repairs whatever the stream missed. It
  reconciles only the CarePlans that may have something to do, and leaves those that provably
  have nothing to do alone (scheduler/settled.py); a full sweep reconciles every one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from events.bus import Bus, Message
from fhirstore.access.acting import Record
from fhirstore.db.leader import Leadership
from fhirstore.db.locks import SCHEDULER_LOCK_KEY
from fhirstore.db.statistics import BulkStatistics
from fhirstore.store import Store
from fhirstore.wire import CHANGES_TOPIC, SCHEDULER_GROUP
from scheduler.bookkeeping import (
    careplan_ids,
    count_careplans,
    forget_tasks,
    plans_of_patients,
    skipped_activities,
)
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
        self._sweep_interval = sweep_interval
        self._due_interval = due_interval
        acting = acting_as_scheduler(store, audit)
        self.reconciler = Reconciler(store, policy, acting=acting)
        self.due = DueTasks(store, policy, acting=acting)
        self.leadership = Leadership(
            store.engine, SCHEDULER_LOCK_KEY, "scheduler", on_change=self._leading
        )
        self._jobs: AsyncIOScheduler | None = None
        self._leader_task: asyncio.Task[None] | None = None
        self._due_task: asyncio.Task[None] | None = None

    def subscribe(self) -> None:
        self._bus.subscribe_batch(CHANGES_TOPIC, SCHEDULER_GROUP, self.handle)

    async def handle(self, messages: Sequence[Message]) -> None:
        """Reconcile the CarePlans these changes concern."""
        careplans: set[str] = set()
        patients: set[str] = set()
        for message in messages:
            resource_type, _, resource_id = message.key.partition("/")
            if resource_type == "CarePlan":
                careplans.add(resource_id)
            elif resource_type == "Patient":
                patients.add(f"Patient/{resource_id}")
        if patients:
            async with self._store.engine.connect() as conn:
                careplans.update(await plans_of_patients(conn, sorted(patients)))
        if careplans:
            # Strict: a CarePlan that cannot be reconciled fails its change, which the bus
            # retries and then quarantines (events/quarantine), rather than skipping it unseen.
            _count(await self.reconciler.reconcile(sorted(careplans), strict=True), "change")

    async def start(self) -> None:
        self._leading(self.leadership.leading)
        self._leader_task = asyncio.create_task(self.leadership.run(), name="scheduler-leader")
        self._due_task = asyncio.create_task(self._wake_due(), name="scheduler-due")
        jobs = AsyncIOScheduler(timezone=UTC)
        jobs.add_job(
            self._sweep_if_leading,
            IntervalTrigger(seconds=self._sweep_interval),
            id="sweep",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),  # at start: catch up on what happened meanwhile
        )
        jobs.start()
        self._jobs = jobs

    async def stop(self) -> None:
        if self._jobs is not None:
            self._jobs.shutdown(wait=False)
            self._jobs = None
        for task in (self._leader_task, self._due_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._leader_task = self._due_task = None

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

    async def _wake_due(self) -> None:
        """Wake what is due, then wait a tick, for ever: a tick is short (a second), and an
        APScheduler job that ran over its interval would only be skipped."""
        while True:
            try:
                await self.due.wake()
            except Exception:
                log.exception("scheduler: due wake-ups failed; trying again at the next tick")
            await asyncio.sleep(self._due_interval)

    async def _sweep_if_leading(self) -> None:
        if not self.leadership.leading:
            return
        try:
            await self.sweep()
        except Exception:
            log.exception("scheduler: sweep failed; trying again at the next interval")

    def _leading(self, leading: bool) -> None:
        SCHEDULER_LEADER.set(1 if leading else 0)
        if leading and self._jobs is not None:  # a new leader sweeps at once
            self._jobs.modify_job("sweep", next_run_time=datetime.now(UTC))


# What reconciliation reads of what it wrote earlier in the same sweep (besides the store's
# resource tables, which BulkStatistics analyzes anyway).
_READ_WHILE_WRITING = (schedule_tasks, schedule_plans)


def _count(repairs: Repairs, cause: str) -> None:
    for kind, n in repairs.task_counts().items():
        if n:
            TASKS_WRITTEN.labels(kind, cause).inc(n)
