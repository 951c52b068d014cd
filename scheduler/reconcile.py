"""Reconciliation: make a batch of CarePlans' Tasks what their schedules want now.

The same step serves a CarePlan change from the stream, the horizon rolling forward and the
periodic sweep, so a missed change event, a crash mid-way, a clock jump or a Task edited or
deleted by hand all end the same way. Per CarePlan, for occurrences in [now - grace, horizon):

- a wanted Task that does not exist (or was deleted) is written, in the state its time says;
- an owned Task whose content differs from the schedule is restored; one whose time has come
  moves forward (requested -> ready -> missed);
- a Task no longer wanted whose occurrence is still ahead and which nobody moved on is cancelled
  (businessStatus `unscheduled`); it comes back if the schedule wants it again;
- another Task carrying the same occurrence identifier is cancelled as a `duplicate`;
- what a person moved on (in-progress, completed, ...) is never touched, and past Tasks stay.

A patient's CarePlans together never want more Tasks in the window than the patient's limit:
CarePlans outside the batch keep what they have, those in it share what is left (docs/limits.md).

The CarePlan's row also records what a sweep needs to leave the CarePlan alone next time
(scheduler/settled.py): the Patient version and policy it was planned with, and until when its
Tasks cover the schedule (never later than a Task row beyond the horizon, which is not judged
now; NULL when a write was refused, so the next sweep reconciles it again).

Each batch is one transaction: Tasks, their rows and the CarePlan's row commit together, so a
crash leaves either all of a batch or none of it. On PostgreSQL a transaction-scoped advisory lock
per CarePlan keeps two schedulers from reconciling the same CarePlan at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore.access.acting import ActingAs
from fhirstore.db.schema import resource_versions, search_index
from fhirstore.db.writer import Head, PendingWrite, WrittenVersion
from fhirstore.errors import FhirError
from fhirstore.store import Store, StoredVersion, as_utc
from scheduler.bookkeeping import (
    PlanRow,
    TaskRow,
    lock_plans,
    patients_task_counts,
    plan_rows,
    save_plans,
    save_tasks,
    task_rows,
)
from scheduler.identity import acting_as_scheduler
from scheduler.plan import (
    Plan,
    limited,
    patient_of,
    patient_tasks_limit,
    patient_zone,
    plan_careplan,
)
from scheduler.policy import OCCURRENCE_SYSTEM, SchedulePolicy
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

log = logging.getLogger(__name__)

BATCH = 50  # CarePlans per transaction
# Failures caused by what is stored rather than by the database (which the caller retries).
_DATA_ERRORS = (FhirError, KeyError, TypeError, ValueError, AttributeError, AssertionError)


class PlanningFailed(ValueError):
    """A CarePlan the planner failed on (its cause chained): a data error, like the others."""


PLAN_COUNTS = frozenset({"plans", "changed_plans", "settled_plans"})  # not Task writes


@dataclass(slots=True)
class Repairs:
    """What a reconciliation wrote, by kind (Tasks unless said otherwise)."""

    plans: int = 0  # CarePlans reconciled
    changed_plans: int = 0  # CarePlans changed (or new) since they were last reconciled
    settled_plans: int = 0  # CarePlans a sweep left alone: provably nothing to do (not planned)
    created: int = 0  # new occurrences inside the horizon
    restored: int = 0  # owned Tasks missing, deleted or edited, put back as scheduled
    updated: int = 0  # owned Tasks rewritten for a changed CarePlan
    woken: int = 0  # requested -> ready
    missed: int = 0  # ready -> missed
    unscheduled: int = 0  # cancelled: no longer in the schedule
    revived: int = 0  # unscheduled -> back in the schedule
    duplicates: int = 0  # cancelled: another Task stands for the same occurrence

    def __iadd__(self, other: Repairs) -> Repairs:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def counts(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def task_counts(self) -> dict[str, int]:
        """Only the kinds of Task writes (not the CarePlan counts)."""
        return {k: v for k, v in self.counts().items() if k not in PLAN_COUNTS}

    @property
    def writes(self) -> int:
        return sum(self.task_counts().values())


class Reconciler:
    def __init__(
        self, store: Store, policy: SchedulePolicy, *, acting: ActingAs | None = None
    ) -> None:
        self._store = store
        self._acting = acting or acting_as_scheduler(store)
        self._policy = policy

    async def reconcile(self, careplan_ids: Sequence[str], *, strict: bool = False) -> Repairs:
        """Reconcile these CarePlans (live, deleted or unknown ids alike). With `strict` (a
        change from the stream), a CarePlan that cannot be reconciled raises, so that the bus
        retries its change and quarantines it if it keeps failing; otherwise (a sweep) it is
        logged and left for later."""
        ids = sorted(set(careplan_ids))
        total = Repairs()
        for start in range(0, len(ids), BATCH):
            total += await self._batch_or_each(ids[start : start + BATCH], strict)
        return total

    async def _batch_or_each(self, ids: Sequence[str], strict: bool) -> Repairs:
        """A batch that fails on its data (not on the database) is done one CarePlan at a
        time, and a CarePlan that still fails is logged and left for later (or, `strict`,
        raises): one bad CarePlan must not stall the change stream or stop a sweep."""
        try:
            return await self._batch(ids, strict)
        except _DATA_ERRORS:
            if len(ids) == 1:
                if strict:
                    raise
                log.exception("scheduler: CarePlan/%s could not be reconciled; skipped", ids[0])
                return Repairs()
        repairs = Repairs()
        for one in ids:
            repairs += await self._batch_or_each([one], strict)
        return repairs

    async def _batch(self, ids: Sequence[str], strict: bool) -> Repairs:
        now = self._store.clock.now()
        repairs = Repairs(plans=len(ids))
        async with self._acting.transaction() as tx:
            conn = tx.conn
            await lock_plans(conn, ids)
            previous = await plan_rows(conn, ids)
            plans = await self._plans(conn, ids, now, strict)
            ids = list(plans)  # without those that could not be planned: left as they are
            changed = {i: _plan_changed(previous.get(i), r) for i, (_, r) in plans.items()}
            repairs.changed_plans = sum(changed.values())
            rows = {
                r.task_id: r for r in await task_rows(conn, ids, since=now - self._policy.grace)
            }
            wanted = _standing(
                (t for plan, _ in plans.values() for t in plan.tasks.values()), rows.values()
            )
            heads = await Store.heads_in(conn, "Task", [*wanted, *rows])
            step = _Step(self._policy, now, repairs)
            for planned in wanted.values():
                step.want(
                    planned,
                    rows.get(planned.id),
                    heads.get(planned.id),
                    changed[planned.careplan_id],
                )
            for row in rows.values():
                if row.task_id not in wanted:
                    step.unwant(row, heads.get(row.task_id))
            step.read(await Store.current_in(conn, "Task", step.to_read))
            for version in await _duplicates(conn, wanted):
                if version.id not in rows and version.id not in wanted:
                    step.duplicate(version)
            outcomes = await tx.write_each([w for w, _ in step.writes])
            kept = [r for r in step.kept if rows.get(r.task_id) != r]  # only what changed
            written, refused = _written_rows(step.writes, outcomes)
            await save_tasks(conn, [*kept, *written])
            horizon_end = now + self._policy.horizon
            after = _covering(plans, rows.values(), horizon_end, refused)
            await save_plans(conn, [r for r in after if _changed(previous.get(r.careplan_id), r)])
        return repairs

    async def _plans(
        self, conn: AsyncConnection, ids: Sequence[str], now: datetime, strict: bool
    ) -> dict[str, tuple[Plan, PlanRow]]:
        """Each CarePlan's plan, and its row: what it was made from."""
        careplans = await Store.current_in(conn, "CarePlan", ids)
        bodies = {i: _body(careplans.get(i)) for i in ids}
        refs = {i: patient_of(b) for i, b in bodies.items()}
        patients = await Store.current_in(
            conn, "Patient", sorted({r.split("/", 1)[1] for r in refs.values() if r})
        )
        first_seen = await _first_seen(conn, ids)
        fingerprint = self._policy.fingerprint
        planned: dict[str, tuple[Plan, int | None, int | None]] = {}
        for i in ids:
            ref = refs[i]
            patient = patients.get(ref.split("/", 1)[1]) if ref else None
            zone = patient_zone(_body(patient), self._policy.default_zone)
            try:
                plan = plan_careplan(
                    i,
                    bodies[i],
                    zone=zone,
                    first_seen=first_seen.get(i, now),
                    now=now,
                    policy=self._policy,
                )
            except Exception as error:  # a bug must not cancel what exists
                if strict:  # the stream's change: retried, then quarantined
                    raise PlanningFailed(f"could not plan CarePlan/{i}") from error
                log.exception("scheduler: could not plan CarePlan/%s; its Tasks stay", i)
                continue
            version = careplans[i].version_id if i in careplans and bodies[i] else None
            patient_version = patient.version_id if patient is not None else None
            planned[i] = (plan, version, patient_version)
        await self._within_patient_limits(conn, planned, now)
        return {
            i: (plan, _plan_row(plan, version, patient_version, fingerprint, now))
            for i, (plan, version, patient_version) in planned.items()
        }

    async def _within_patient_limits(
        self,
        conn: AsyncConnection,
        planned: dict[str, tuple[Plan, int | None, int | None]],
        now: datetime,
    ) -> None:
        """Keep each patient's Tasks in the horizon within `tasks_per_patient`: the patient's
        other CarePlans keep what they have, and the batch's CarePlans (in id order) get what
        is left, their earliest occurrences first; the rest is reported as skipped."""
        limits = self._policy.limits
        patients = sorted({p.patient for p, _, _ in planned.values() if p.patient and p.tasks})
        if not patients:
            return
        taken = await patients_task_counts(
            conn,
            patients,
            excluding=list(planned),
            since=now - self._policy.grace,
            until=now + self._policy.horizon,
        )
        reason = patient_tasks_limit(limits)
        for i in sorted(planned):
            plan, version, patient_version = planned[i]
            patient = plan.patient
            if patient is None or patient not in taken:
                continue
            allowance = max(0, limits.tasks_per_patient - taken[patient])
            plan = limited(plan, allowance, reason)
            taken[patient] += len(plan.tasks)
            planned[i] = (plan, version, patient_version)


class _Step:
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
        self._to_cancel: list[TaskRow] = []

    @property
    def to_read(self) -> list[str]:
        """The Tasks whose bodies `read` needs."""
        return [p.id for p, _ in self._to_repair] + [r.task_id for r in self._to_cancel]

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

    def unwant(self, row: TaskRow, head: Head | None) -> None:
        """A Task the schedule no longer wants: cancel it if it is ahead and still owned."""
        if (
            head is None
            or head.deleted
            or row.start < self.now  # the past is history
            or row.start >= self.now + self.policy.horizon  # beyond the horizon: not judged
        ):
            self.kept.append(replace(row, wanted=False))
            return
        self._to_cancel.append(row)

    def read(self, current: Mapping[str, StoredVersion]) -> None:
        """Decide the Tasks `to_read`, from their bodies as they are now."""
        for planned, plan_changed in self._to_repair:
            self._repair(planned, current[planned.id], plan_changed)
        for row in self._to_cancel:
            self._cancel(row, current[row.task_id])

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

    def _cancel(self, row: TaskRow, current: StoredVersion) -> None:
        body = orjson.loads(current.body or "{}")
        state = state_of(body)
        if state not in ("requested", "ready"):
            self.kept.append(_replace_row(row, state, current.version_id))
            return
        self._count("unscheduled")
        self._write(
            row.task_id,
            with_state(body, "unscheduled"),
            current.version_id,
            _replace_row(row, "unscheduled", 0),
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


def _replace_row(row: TaskRow, state: TaskState, version: int) -> TaskRow:
    """The row of a Task the schedule no longer wants, in `state` at `version`."""
    return replace(row, task_version=version, state=state, due_at=None, wanted=False)


def _standing(planned: Iterable[PlannedTask], rows: Iterable[TaskRow]) -> dict[str, PlannedTask]:
    """The wanted Tasks by id. An occurrence that has a Task row keeps that Task, whatever id
    `task_id` gives it now: Tasks made before its formula changed are not made twice."""
    held = {(r.careplan_id, r.activity, r.start): r.task_id for r in rows}
    wanted: dict[str, PlannedTask] = {}
    for task in planned:
        task_id = held.get((task.careplan_id, task.activity, task.start), task.id)
        wanted[task_id] = task if task_id == task.id else replace(task, id=task_id)
    return wanted


def _written_rows(
    writes: Sequence[tuple[PendingWrite, TaskRow | None]],
    outcomes: Sequence[WrittenVersion | FhirError | None],
) -> tuple[list[TaskRow], set[str]]:
    """The rows of the writes that went through, with the version written, and the CarePlans
    of those refused. A write refused (someone changed the Task in between) keeps its old row:
    the next sweep looks again."""
    rows: list[TaskRow] = []
    refused: set[str] = set()
    for (write, row), outcome in zip(writes, outcomes, strict=True):
        if row is None:
            continue
        if isinstance(outcome, WrittenVersion):
            rows.append(replace(row, task_version=outcome.version_id))
        else:
            refused.add(row.careplan_id)
            log.info("scheduler: Task/%s changed under us (%s); next sweep", write.id, outcome)
    return rows, refused


def _covering(
    plans: Mapping[str, tuple[Plan, PlanRow]],
    tasks: Iterable[TaskRow],
    horizon_end: datetime,
    refused: set[str],
) -> list[PlanRow]:
    """The plans' rows with `covered_until` no later than their first Task row beyond the
    horizon (not judged now), and None where a write was refused."""
    beyond: dict[str, datetime] = {}
    for task in tasks:
        if task.start >= horizon_end:
            beyond[task.careplan_id] = min(task.start, beyond.get(task.careplan_id, task.start))
    covering: list[PlanRow] = []
    for i, (plan, row) in plans.items():
        until = min(plan.covered_until, beyond.get(i, plan.covered_until))
        covering.append(replace(row, covered_until=None if i in refused else until))
    return covering


def _plan_row(
    plan: Plan, version: int | None, patient_version: int | None, policy: str, now: datetime
) -> PlanRow:
    report = {
        "tasks": len(plan.tasks),
        "skipped": [{"activity": s.activity, "reason": s.reason} for s in plan.skipped],
    }
    return PlanRow(
        plan.careplan_id,
        version,
        plan.patient,
        plan.zone,
        plan.scheduled,
        orjson.dumps(report).decode(),
        now,
        patient_version,
        policy,
        plan.covered_until,
    )


def _plan_changed(before: PlanRow | None, after: PlanRow) -> bool:
    """Whether the CarePlan (or its patient's time zone) changed since it was last reconciled:
    then every Task it wants is compared with the schedule, not only moved on in time."""
    return before is None or (before.version_id, before.zone) != (after.version_id, after.zone)


def _changed(before: PlanRow | None, after: PlanRow) -> bool:
    """Whether a CarePlan's row says something new: not only a later `reconciled_at` (an
    earlier one is new: the clock went back, and scheduler/settled.py must know it)."""
    if before is None or after.reconciled_at < before.reconciled_at:
        return True
    return replace(before, reconciled_at=after.reconciled_at) != after


def _body(version: StoredVersion | None) -> dict[str, Any] | None:
    if version is None or version.body is None:
        return None
    body = orjson.loads(version.body)
    return body if isinstance(body, dict) else None


async def _first_seen(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, datetime]:
    """When each CarePlan was first stored (its version 1): a fixed start for schedules that
    name none."""
    v = resource_versions.c
    rows = await conn.execute(
        select(v.res_id, v.last_updated).where(
            and_(v.res_type == "CarePlan", v.version_id == 1, v.res_id.in_(list(ids)))
        )
    )
    return {row.res_id: as_utc(row.last_updated) for row in rows}


async def _duplicates(
    conn: AsyncConnection, wanted: Mapping[str, PlannedTask]
) -> list[StoredVersion]:
    """Other Tasks carrying the identifier of a wanted occurrence."""
    by_value = {t.identifier: t.id for t in wanted.values()}
    values = list(by_value)
    others: list[str] = []
    s = search_index.c
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        rows = await conn.execute(
            select(s.res_id, s.code).where(
                and_(
                    s.res_type == "Task",
                    s.param == "identifier",
                    s.code.in_(chunk),
                    s.system == OCCURRENCE_SYSTEM,
                )
            )
        )
        others.extend(row.res_id for row in rows if by_value.get(row.code) != row.res_id)
    if not others:
        return []
    found = await Store.current_in(conn, "Task", others)
    return [v for v in found.values() if not v.deleted]
