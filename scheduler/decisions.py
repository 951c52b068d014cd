"""The decisions of one reconciliation batch, Task by Task: write it (and what its row
becomes) or keep it as it is (scheduler/reconcile.py runs the batch; the rules are in its
docstring)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson

from fhirstore import StoredVersion
from fhirstore.db import Head, PendingWrite
from scheduler.bookkeeping import TaskRow
from scheduler.policy import SchedulePolicy
from scheduler.repairs import Repairs
from scheduler.task import (
    PlannedTask,
    TaskState,
    content_differs,
    moved_state,
    new_task,
    next_due,
    state_of,
    timed_state,
    with_content,
    with_state,
)


class BatchDecisions:
    """The decisions of one batch: writes (with what the row becomes) and rows kept as is.

    Most Tasks are decided from their current version number alone (`want`, `unwant`); those
    that need their body are decided after it is read (`read`), all in one query.
    """

    def __init__(self, policy: SchedulePolicy, now: datetime, repairs: Repairs) -> None:
        self.policy, self.now, self.repairs = policy, now, repairs
        # Each write, and the row it leaves behind (None: not a Task of Herald's own).
        self.writes: list[tuple[PendingWrite, TaskRow | None]] = []
        self.kept: list[TaskRow] = []
        self._to_repair: list[tuple[PlannedTask, bool]] = []
        self._to_cancel: list[tuple[TaskRow, bool]] = []

    @property
    def to_read(self) -> list[str]:
        """The Tasks whose bodies `read` needs."""
        return [p.id for p, _ in self._to_repair] + [r.task_id for r, _ in self._to_cancel]

    def want(
        self, planned: PlannedTask, row: TaskRow | None, head: Head | None, plan_changed: bool
    ) -> None:
        if head is None or head.deleted:
            state = timed_state(planned.start, self.now, self.policy)
            body = new_task(planned, state, self.now)
            self._count("created" if row is None and head is None else "restored")
            version = head.version_id if head is not None else None
            self._write(planned.id, body, version, _row(planned, state, 0, self.policy))
            return
        untouched = row is not None and row.task_version == head.version_id
        if untouched and not plan_changed:
            assert row is not None
            target = moved_state(row.state, planned.start, self.now, self.policy)
            if target is None and row.state != "unscheduled":
                self.kept.append(_row(planned, row.state, row.task_version, self.policy))
                return
        self._to_repair.append((planned, plan_changed))

    def unwant(self, row: TaskRow, head: Head | None, scheduled: bool = False) -> None:
        """A Task the schedule no longer wants: cancel it if it is ahead and still owned.
        While its CarePlan is `scheduled`, one that went out already (ready before its start,
        by the lead time) stays: it is that day's reminder for its slot (scheduler/slots.py)."""
        if (
            head is None
            or head.deleted
            or row.start < self.now  # the past is history
            or row.start >= self.now + self.policy.horizon  # beyond the horizon: not judged
        ):
            self.kept.append(replace(row, wanted=False))
            return
        self._to_cancel.append((row, scheduled))

    def read(self, current: Mapping[str, StoredVersion]) -> None:
        """Decide the Tasks `to_read`, from their bodies as they are now."""
        for planned, plan_changed in self._to_repair:
            self._repair(planned, current[planned.id], plan_changed)
        for row, scheduled in self._to_cancel:
            self._cancel(row, current[row.task_id], scheduled)

    def _repair(self, planned: PlannedTask, current: StoredVersion, plan_changed: bool) -> None:
        body = orjson.loads(current.body or "{}")
        state = state_of(body)
        if state in ("released", "missed"):
            self.kept.append(_row(planned, state, current.version_id, self.policy))
            return
        target = (
            timed_state(planned.start, self.now, self.policy)
            if state == "unscheduled"
            else moved_state(state, planned.start, self.now, self.policy) or state
        )
        # A Task whose time has come keeps what it said then; only its state moves on.
        ahead = planned.start >= self.now
        repaired = with_state(with_content(body, planned) if ahead else body, target)
        if repaired == with_state(body, state):
            self.kept.append(_row(planned, state, current.version_id, self.policy))
            return
        if state == "unscheduled":
            self._count("revived")
        elif ahead and content_differs(body, planned):
            self._count("updated" if plan_changed else "restored")
        else:
            self._count("woken" if target == "ready" else "missed")
        row = _row(planned, target, 0, self.policy)
        self._write(planned.id, repaired, current.version_id, row)

    def _cancel(self, row: TaskRow, current: StoredVersion, scheduled: bool) -> None:
        body = orjson.loads(current.body or "{}")
        state = state_of(body)
        if scheduled and state == "ready":  # went out: it stays, and goes missed in time
            due = next_due(state, row.start, self.policy)
            self.kept.append(
                replace(row, task_version=current.version_id, state=state, due_at=due, wanted=False)
            )
            return
        if state not in ("requested", "ready"):
            self.kept.append(_unwanted_row(row, state, current.version_id))
            return
        self._count("unscheduled")
        self._write(
            row.task_id,
            with_state(body, "unscheduled"),
            current.version_id,
            _unwanted_row(row, "unscheduled", 0),
        )

    def duplicate(self, current: StoredVersion) -> None:
        body = orjson.loads(current.body or "{}")
        if state_of(body) in ("requested", "ready"):
            self._count("duplicates")
            cancelled = with_state(body, "duplicate")
            self.writes.append(
                (PendingWrite("Task", current.id, cancelled, if_match=current.version_id), None)
            )

    def _write(self, task_id: str, body: dict[str, Any], version: int | None, row: TaskRow) -> None:
        self.writes.append((PendingWrite("Task", task_id, body, if_match=version), row))

    def _count(self, kind: str) -> None:
        setattr(self.repairs, kind, getattr(self.repairs, kind) + 1)


def _row(planned: PlannedTask, state: TaskState, version: int, policy: SchedulePolicy) -> TaskRow:
    return TaskRow(
        planned.id,
        planned.careplan_id,
        planned.activity,
        planned.start,
        version,
        state,
        next_due(state, planned.start, policy) if state in ("requested", "ready") else None,
        wanted=True,
    )


def _unwanted_row(row: TaskRow, state: TaskState, version: int) -> TaskRow:
    """The row of a Task the schedule no longer wants, in `state` at `version`."""
    return replace(row, task_version=version, state=state, due_at=None, wanted=False)
