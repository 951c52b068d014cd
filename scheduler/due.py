"""Due wake-ups: a requested Task becomes ready at its start (less the lead time), and a ready
one nobody moved on becomes missed once the grace period is over.

Rows come from `schedule_tasks` by `due_at`, a batch per transaction; on PostgreSQL they are
claimed with FOR UPDATE SKIP LOCKED, so any number of schedulers share them and none wakes a
Task twice. A Task someone moved on meanwhile is released, never written; one deleted by hand
is left for the sweep to restore.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime

import orjson

from fhirstore import Store
from fhirstore.access import ActingAs
from fhirstore.db import PendingWrite, WrittenVersion
from scheduler.bookkeeping import TaskRow, claim_due, save_tasks
from scheduler.identity import acting_as_scheduler
from scheduler.metrics import TASKS_WRITTEN, WAKE_LAG
from scheduler.policy import SchedulePolicy
from scheduler.task import TaskState, moved_state, next_due, state_of, with_state

BATCH = 500


class DueTasks:
    def __init__(
        self,
        store: Store,
        policy: SchedulePolicy,
        *,
        batch: int = BATCH,
        acting: ActingAs | None = None,
    ) -> None:
        self._store = store
        self._acting = acting or acting_as_scheduler(store)
        self._policy = policy
        self._batch = batch

    async def wake(self) -> int:
        """Move every Task due by now; return how many were written."""
        total = 0
        while True:
            written, claimed = await self._once()
            total += written
            if claimed < self._batch:
                return total

    async def _once(self) -> tuple[int, int]:
        now = self._store.clock.now()
        async with self._acting.transaction() as tx:
            conn = tx.conn
            rows = await claim_due(conn, now, self._batch)
            if not rows:
                return 0, 0
            current = await Store.current_in(conn, "Task", [r.task_id for r in rows])
            writes: list[tuple[PendingWrite, TaskRow, TaskState]] = []  # write, row, target
            settled: list[TaskRow] = []
            for row in rows:
                version = current.get(row.task_id)
                if version is None or version.body is None:  # deleted: the sweep restores it
                    settled.append(replace(row, due_at=None))
                    continue
                body = orjson.loads(version.body)
                state = state_of(body)
                target = moved_state(state, row.start, now, self._policy)
                if target is None:
                    due = next_due(state, row.start, self._policy)
                    later = due if due is not None and due > now else None
                    settled.append(
                        replace(row, state=state, task_version=version.version_id, due_at=later)
                    )
                    continue
                moved = with_state(body, target)
                write = PendingWrite("Task", row.task_id, moved, version.version_id, previous=body)
                writes.append((write, row, target))
            outcomes = await tx.write_each([w for w, _, _ in writes])
            kinds: Counter[str] = Counter()
            lags: list[float] = []
            for (_, row, target), outcome in zip(writes, outcomes, strict=True):
                if not isinstance(outcome, WrittenVersion):
                    continue  # changed under us: due again at once, looked at afresh
                due = next_due(target, row.start, self._policy)
                settled.append(
                    replace(row, state=target, task_version=outcome.version_id, due_at=due)
                )
                kinds["woken" if target == "ready" else target] += 1
                lags.append(_lag(row, now))
            await save_tasks(conn, settled)
        # Counted once the batch is committed: a batch rolled back woke nothing.
        for kind, n in kinds.items():
            TASKS_WRITTEN.labels(kind, "due").inc(n)
        for lag in lags:
            WAKE_LAG.observe(lag)
        return kinds.total(), len(rows)


def _lag(row: TaskRow, now: datetime) -> float:
    return max(0.0, (now - row.due_at).total_seconds()) if row.due_at else 0.0
