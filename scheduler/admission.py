"""Write-time checks on CarePlans: what a CarePlan would ask of the scheduler is counted before
it is stored, and one over a limit, or with a schedule that cannot happen, is refused (422) with
the limit or the element named. Nothing of it is stored then, and no Task is made.

- Activities per CarePlan (`ScheduleLimits.activities`): every CarePlan, scheduled or not.
- For a CarePlan the scheduler will schedule (active, plan or order, tagged if the server says
  so), each activity's occurrences in the window the scheduler fills ([now - grace, now +
  horizon)) are counted with the Timing engine, without materialising anything, and never
  further than the limit + 1: an activity every minute for years costs no more to refuse than
  one just over the limit. A `count` is walked from the schedule's start, so all counting for
  one CarePlan shares a budget of steps (`COUNT_STEPS`); a CarePlan that needs more is refused.
- Tasks per CarePlan within the horizon (`tasks_per_careplan`), then Tasks per patient
  (`tasks_per_patient`): the patient's other CarePlans count with the Tasks their last
  reconciliation wanted in the window (scheduler bookkeeping), and those not reconciled at
  their current version yet (written moments ago) are counted from their bodies like this one.
- An activity whose schedule is impossible, contradictory or too dense (`Unschedulable`) is
  refused, naming the activity; one in a form Herald does not read (`Unsupported`: free text,
  a Timing.code alone) is stored and reported by `$schedule` as skipped, as before.

Counting is CPU work, so it runs on a worker thread and the event loop keeps answering.
CarePlans for one patient written at once are decided one at a time in a process, each counting
those admitted before it (fhirstore/limits.py `Admissions`); across processes they are not, and
reconciliation keeps the patient's Tasks within the limit whatever was admitted (plan.limited).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from fhirstore import (
    Admissions,
    FhirError,
    Gone,
    NotFound,
    ResourceRule,
    Store,
    Unprocessable,
    over_limit,
)
from scheduler.bookkeeping import planned_task_counts, unplanned_careplans
from scheduler.plan import (
    COUNT_STEPS,
    activities,
    anchor_of,
    not_scheduled,
    patient_of,
    patient_zone,
)
from scheduler.policy import SchedulePolicy
from scheduler.timing import Budget, Unschedulable, Unsupported, occurrences


def careplan_rule(store: Store, policy: SchedulePolicy) -> ResourceRule:
    """The rule for every client write of a CarePlan (REST and Bundles)."""
    limits = policy.limits
    admissions = Admissions()  # per patient: CarePlans admitted, perhaps not committed yet

    async def check(careplan: dict[str, Any]) -> dict[str, Any]:
        count = len(careplan.get("activity") or ())
        if count > limits.activities:
            raise over_limit(
                f"the CarePlan has {count} activities",
                limits.activities,
                "LIMIT_CAREPLAN_ACTIVITIES",
                "split it into several CarePlans",
                "CarePlan.activity",
            )
        if not_scheduled(careplan, policy.tag) is not None:
            return careplan  # not scheduled: asks nothing of the scheduler
        now = store.clock.now()
        patient = patient_of(careplan)
        zone = patient_zone(await _body(store, patient), policy.default_zone)
        anchor = anchor_of(careplan, zone) or now
        most = limits.tasks_per_careplan
        tasks = await asyncio.to_thread(scheduled_tasks, careplan, zone, anchor, now, policy, most)
        if tasks > most:
            raise over_limit(
                f"its activities would have more than {most} Tasks within the scheduling"
                f" horizon ({policy.horizon.days} days)",
                most,
                "LIMIT_CAREPLAN_TASKS",
                "schedule them less often or for a shorter time (boundsPeriod, count)",
                "CarePlan.activity",
            )
        if patient is not None:
            await _within_patient_limit(
                store, policy, admissions, careplan, patient, zone, now, tasks
            )
        return careplan

    return check


def scheduled_tasks(
    careplan: Mapping[str, Any],
    zone: ZoneInfo,
    anchor: datetime,
    now: datetime,
    policy: SchedulePolicy,
    most: int,
) -> int:
    """How many occurrences the CarePlan's activities have in [now - grace, now + horizon),
    counted no further than `most` + 1. Raises Unprocessable naming the first activity whose
    schedule cannot happen."""
    total = 0
    budget = Budget(COUNT_STEPS)
    for index, (_, _, detail, _) in enumerate(activities(careplan, policy.limits.activities)):
        if detail is None:
            continue
        try:
            found = occurrences(
                detail,
                zone=zone,
                anchor=anchor,
                window_start=now - policy.grace,
                window_end=now + policy.horizon,
                when=policy.when,
                limit=most - total + 1,
                budget=budget,
            )
        except Unsupported:
            continue  # stored, and reported as skipped
        except Unschedulable as error:
            path = f"CarePlan.activity[{index}].detail"
            raise Unprocessable(f"{path}: {error.reason}", expression=[path]) from None
        total += len(found)
        if total > most:
            break
    return total


async def _within_patient_limit(
    store: Store,
    policy: SchedulePolicy,
    admissions: Admissions,
    careplan: Mapping[str, Any],
    patient: str,
    zone: ZoneInfo,
    now: datetime,
    tasks: int,
) -> None:
    """Refuse the CarePlan when the patient's other CarePlans and its `tasks` would pass
    `tasks_per_patient`: those reconciled count with their Tasks, those not yet with their
    bodies, and those this process admitted moments ago (not stored yet) with their count."""
    most = policy.limits.tasks_per_patient
    found = careplan.get("id")
    careplan_id = found if isinstance(found, str) else None
    excluding = [careplan_id] if careplan_id else []
    async with admissions.deciding(patient) as decision:
        async with store.engine.connect() as conn:
            # Read in the order things move (admitted -> stored -> reconciled), each read
            # separately: one that moves on between two reads is seen twice, never missed,
            # and counted once (by id).
            stored = await Store.heads_in(conn, "CarePlan", list(decision.recent))
            unplanned = await unplanned_careplans(conn, patient, excluding=excluding)
            planned = await planned_task_counts(
                conn,
                patient,
                excluding=excluding,
                since=now - policy.grace,
                until=now + policy.horizon,
            )
        bodies = [body for i, body in unplanned.items() if i not in planned]
        counted = {*planned, *unplanned, *excluding}
        pending = decision.pending(stored)
        others = sum(planned.values()) + sum(n for i, n in pending.items() if i not in counted)
        if bodies and others + tasks <= most:
            others += await asyncio.to_thread(
                _unplanned_tasks, bodies, zone, now, policy, most - others - tasks
            )
        if others + tasks > most:
            raise over_limit(
                f"{patient}'s CarePlans would have more than {most} Tasks within the"
                f" scheduling horizon ({policy.horizon.days} days) together; this one would"
                f" add {tasks}",
                most,
                "LIMIT_PATIENT_TASKS",
                "end or shorten another of the patient's CarePlans first",
                "CarePlan.subject",
            )
        decision.admit(careplan_id, tasks)


def _unplanned_tasks(
    bodies: list[str], zone: ZoneInfo, now: datetime, policy: SchedulePolicy, most: int
) -> int:
    """The Tasks of CarePlans the scheduler has not planned yet, counted no further than
    `most` + 1 (one whose schedule cannot happen, stored before this check, counts none)."""
    total = 0
    for body in bodies:
        careplan = orjson.loads(body)
        if not isinstance(careplan, dict) or not_scheduled(careplan, policy.tag) is not None:
            continue
        anchor = anchor_of(careplan, zone) or now
        with contextlib.suppress(FhirError):
            total += scheduled_tasks(careplan, zone, anchor, now, policy, most - total)
        if total > most:
            break
    return total


async def _body(store: Store, reference: str | None) -> dict[str, Any] | None:
    """The current body of `Patient/{id}`, None when it is not there."""
    if reference is None:
        return None
    resource_type, _, resource_id = reference.partition("/")
    with contextlib.suppress(NotFound, Gone):
        version = await store.read(resource_type, resource_id)
        body = orjson.loads(version.body or "null")
        return body if isinstance(body, dict) else None
    return None
