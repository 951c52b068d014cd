"""Reconciliation: make a batch of CarePlans' Tasks what their schedules want now.

The same step serves a CarePlan change from the stream, the horizon rolling forward and the
periodic sweep, so a missed change event, a crash mid-way, a clock jump or a Task edited or
deleted by hand all end the same way. Per CarePlan, for occurrences in [now - grace, horizon):

- a wanted Task that does not exist (or was deleted) is written, in the state its time says;
- an owned Task whose content differs from the schedule is restored; one whose time has come
  moves forward (requested -> ready -> missed);
- a Task no longer wanted whose occurrence is still ahead and which nobody moved on is cancelled
  (businessStatus `unscheduled`); it comes back if the schedule wants it again. One already
  `ready` (by the lead time) stays while its CarePlan is scheduled: it went out;
- another Task carrying the same occurrence identifier is cancelled as a `duplicate`;
- a day's reminders that went out for occurrences no longer in the schedule (a new time zone,
  a new time of day) stand for that day's earliest new occurrences, which get no Task
  (scheduler/slots.py): a day never has more reminders than occurrences;
- what a person moved on (in-progress, completed, ...) is never touched, and past Tasks stay.

A patient's CarePlans together never want more Tasks in the window than the patient's limit:
CarePlans outside the batch keep what they have, those in it share what is left (docs/limits.md).

The CarePlan's row also records what a sweep needs to leave the CarePlan alone next time
(scheduler/settled.py): the Patient version and policy it was planned with, and until when its
Tasks cover the schedule (never later than a Task row beyond the horizon, which is not judged
now; NULL when a write was refused, so the next sweep reconciles it again). Its reference rows
record each request a scheduled CarePlan's activities refer to, at the version it was planned
with (NULL: not stored, or deleted), so that a change to the request, even its creation,
reschedules the CarePlan (scheduler/service.py) and a missed one is seen by a sweep.

Each batch is one transaction: Tasks, their rows and the CarePlan's rows commit together, so a
crash leaves either all of a batch or none of it. On PostgreSQL a transaction-scoped advisory lock
per CarePlan keeps two schedulers from reconciling the same CarePlan at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore import FhirError, Store, StoredVersion, first_stored, token_holders
from fhirstore.access import ActingAs
from fhirstore.db import PendingWrite, WrittenVersion
from fhirstore.wire import OCCURRENCE_SYSTEM
from scheduler.activity import referenced
from scheduler.bookkeeping import (
    PlanRow,
    ReferenceRow,
    TaskRow,
    lock_plans,
    patients_task_counts,
    plan_rows,
    reference_rows,
    save_plans,
    save_references,
    save_tasks,
    task_rows,
)
from scheduler.decisions import BatchDecisions
from scheduler.identity import acting_as_scheduler
from scheduler.plan import (
    Plan,
    limited,
    patient_of,
    patient_tasks_limit,
    patient_zone,
    plan_careplan,
)
from scheduler.policy import SchedulePolicy
from scheduler.repairs import Repairs
from scheduler.slots import ZONES_APART, without_spent_slots
from scheduler.task import (
    PlannedTask,
)

log = logging.getLogger(__name__)

BATCH = 50  # CarePlans per transaction
# Failures caused by what is stored rather than by the database (which the caller retries).
_DATA_ERRORS = (FhirError, KeyError, TypeError, ValueError, AttributeError, AssertionError)


class PlanningFailed(ValueError):
    """A CarePlan the planner failed on (its cause chained): a data error, like the others."""


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
            plans, references = await self._plans(conn, ids, now, strict)
            ids = list(plans)  # without those that could not be planned: left as they are
            before = await reference_rows(conn, ids)
            changed = {
                i: _plan_changed(previous.get(i), r) or before.get(i, frozenset()) != references[i]
                for i, (_, r) in plans.items()
            }
            repairs.changed_plans = sum(changed.values())
            since = now - self._policy.grace
            # From a day earlier: what went out that day counts against the day (slots.py).
            recent = await task_rows(conn, ids, since=since - ZONES_APART)
            rows = {r.task_id: r for r in recent if r.start >= since}
            wanted = await without_spent_slots(
                conn,
                _standing(
                    (t for plan, _ in plans.values() for t in plan.tasks.values()), rows.values()
                ),
                recent,
                {i: plan.zone for i, (plan, _) in plans.items()},
                since=since,
                earlier={i: plan.earlier for i, (plan, _) in plans.items()},
            )
            heads = await Store.heads_in(conn, "Task", [*wanted, *rows])
            step = BatchDecisions(self._policy, now, repairs)
            for planned in wanted.values():
                step.want(
                    planned,
                    rows.get(planned.id),
                    heads.get(planned.id),
                    changed[planned.careplan_id],
                )
            for row in rows.values():
                if row.task_id not in wanted:
                    step.unwant(row, heads.get(row.task_id), plans[row.careplan_id][0].scheduled)
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
            await save_references(
                conn,
                {i: r for i, r in references.items() if before.get(i, frozenset()) != r},
            )
        return repairs

    async def _plans(
        self, conn: AsyncConnection, ids: Sequence[str], now: datetime, strict: bool
    ) -> tuple[dict[str, tuple[Plan, PlanRow]], dict[str, frozenset[ReferenceRow]]]:
        """Each CarePlan's plan, and its row: what it was made from; and the requests each was
        planned from (none when it is not scheduled: then no request matters)."""
        careplans = await Store.current_in(conn, "CarePlan", ids)
        bodies = {i: _body(careplans.get(i)) for i in ids}
        requests = await _requests(conn, [t for b in bodies.values() for t in referenced(b)])
        refs = {i: patient_of(b) for i, b in bodies.items()}
        patients = await Store.current_in(
            conn, "Patient", sorted({r.split("/", 1)[1] for r in refs.values() if r})
        )
        first_seen = await first_stored(conn, "CarePlan", ids)
        fingerprint = self._policy.fingerprint
        planned: dict[str, tuple[Plan, int | None, int | None]] = {}
        references: dict[str, frozenset[ReferenceRow]] = {}
        for i in ids:
            ref = refs[i]
            patient = patients.get(ref.split("/", 1)[1]) if ref else None
            zone = patient_zone(_body(patient), self._policy.default_zone)
            targets = referenced(bodies[i])
            try:
                plan = plan_careplan(
                    i,
                    bodies[i],
                    zone=zone,
                    first_seen=first_seen.get(i, now),
                    now=now,
                    policy=self._policy,
                    requests={t: _body(requests.get(t)) for t in targets},
                )
            except Exception as error:  # a bug must not cancel what exists
                if strict:  # the stream's change: retried, then quarantined
                    raise PlanningFailed(f"could not plan CarePlan/{i}") from error
                log.exception("scheduler: could not plan CarePlan/%s; its Tasks stay", i)
                continue
            version = careplans[i].version_id if i in careplans and bodies[i] else None
            patient_version = patient.version_id if patient is not None else None
            planned[i] = (plan, version, patient_version)
            references[i] = frozenset(
                _reference_row(i, t, requests.get(t)) for t in (targets if plan.scheduled else ())
            )
        await self._within_patient_limits(conn, planned, now)
        rows = {
            i: (plan, _plan_row(plan, version, patient_version, fingerprint, now))
            for i, (plan, version, patient_version) in planned.items()
        }
        return rows, references

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
    """Whether the CarePlan (or its patient's time zone) changed since it was last reconciled
    (or, checked beside, a request it refers to): then every Task it wants is compared with
    the schedule, not only moved on in time."""
    return before is None or (before.version_id, before.zone) != (after.version_id, after.zone)


def _changed(before: PlanRow | None, after: PlanRow) -> bool:
    """Whether a CarePlan's row says something new: not only a later `reconciled_at` (an
    earlier one is new: the clock went back, and scheduler/settled.py must know it)."""
    if before is None or after.reconciled_at < before.reconciled_at:
        return True
    return replace(before, reconciled_at=after.reconciled_at) != after


async def _requests(conn: AsyncConnection, targets: Iterable[str]) -> dict[str, StoredVersion]:
    """The current version of each request (`Type/id`) that was ever stored."""
    by_type: dict[str, set[str]] = {}
    for target in targets:
        resource_type, _, resource_id = target.partition("/")
        by_type.setdefault(resource_type, set()).add(resource_id)
    found: dict[str, StoredVersion] = {}
    for resource_type, ids in sorted(by_type.items()):
        versions = await Store.current_in(conn, resource_type, sorted(ids))
        found.update({f"{resource_type}/{i}": v for i, v in versions.items()})
    return found


def _reference_row(careplan_id: str, target: str, request: StoredVersion | None) -> ReferenceRow:
    resource_type, _, resource_id = target.partition("/")
    version = None if request is None or request.deleted else request.version_id
    return ReferenceRow(careplan_id, resource_type, resource_id, version)


def _body(version: StoredVersion | None) -> dict[str, Any] | None:
    if version is None or version.body is None:
        return None
    body = orjson.loads(version.body)
    return body if isinstance(body, dict) else None


async def _duplicates(
    conn: AsyncConnection, wanted: Mapping[str, PlannedTask]
) -> list[StoredVersion]:
    """Other Tasks carrying the identifier of a wanted occurrence."""
    by_value = {t.identifier: t.id for t in wanted.values()}
    holders = await token_holders(conn, "Task", "identifier", OCCURRENCE_SYSTEM, list(by_value))
    others = [task_id for task_id, code in holders if by_value.get(code) != task_id]
    if not others:
        return []
    found = await Store.current_in(conn, "Task", others)
    return [v for v in found.values() if not v.deleted]
