"""Which CarePlans a sweep may leave alone: those with provably nothing to do, found in SQL.

Reconciling a CarePlan means planning it (the Timing engine) and reading every Task row and Task
version it owns; over thousands of CarePlans that is most of a sweep, and nearly all of them
have nothing to fix. A CarePlan is *settled*, and the sweep skips it without planning it, when
all of these hold (anything else goes through the one reconciliation path, `Reconciler`):

0. now is not before its `reconciled_at`: the clock did not go back since it was planned;
1. its current version is the one last planned (or it is still deleted): no change was missed;
2. its Patient's current version is the one it was planned with (the time zone comes from the
   Patient), or there is still no Patient;
3. each request it was planned from (its reference rows: every request its activities refer
   to, when it is scheduled; scheduler/reconcile.py) is at the version it was planned with, or
   was not stored (or deleted) then and still is not (or is still deleted), and is of a type
   Herald still reads: no change to a MedicationRequest, say, was missed;
4. it was planned under the policy in force (`SchedulePolicy.fingerprint`: horizon, lead,
   grace, when times, tag, default zone, Herald release);
5. now + horizon has not passed `covered_until`: the start of the first occurrence the plan
   left out, or of a Task row beyond the horizon then (not judged then);
6. no Task row of an occurrence not yet missed (start >= now - grace) is due: the due loop is
   behind, or the clock jumped;
7. each such row the schedule wanted (`wanted`, as of the last reconciliation) has its Task,
   live, at the version Herald wrote or last saw (not deleted or edited by hand, no write lost
   a race), not cancelled as unscheduled, and no other Task, requested or ready, carries its
   occurrence identifier (a duplicate made by hand);
8. each row it did not want whose occurrence is ahead but inside the horizon
   (now <= start < now + horizon) has its Task at that version too (someone may have set it
   going again). Such a Task deleted, or edited in the past, is left as it is, by
   reconciliation too; so is one beyond the horizon, which reconciliation does not judge
   (`unwant` keeps its row as it is, old version and all).

Why that is enough. The proof assumes time only moves forward between the last reconciliation
and now, and 0 checks exactly that: a reconciliation at an earlier now has a window that starts
earlier, and may want Tasks for occurrences the last one had already left behind (a clock set
back). `reconciled_at` is the last reconciliation that changed the CarePlan's row; a later one
that changed nothing did not store its time, which only makes 0 weaker in a way that does not
matter (everything below holds as of that earlier reconciliation), and a reconciliation whose
now is earlier than `reconciled_at` always stores it (`reconcile._changed`).
With 0-4, planning again would give the same schedule, only for a window
[now - grace, now + horizon) that starts no earlier and ends no earlier: a plan is made from
the CarePlan, its Patient, the requests its activities refer to (read only when it is
scheduled; which ones follows from the CarePlan and the release, 1 and 4), the policy, the
first time the CarePlan was stored, and now; and the reference rows are written in the
transaction that writes the plan row, at the versions that planning read. With 5, nothing
enters that window at its end: the Tasks it wants are those it wanted, less those whose time
is past, and each has its row (a reconciliation that could not write everything leaves
`covered_until` NULL). Those rows are the same (later: fewer), still wanted or not; 6-8 are
what reconciliation would act on in each: no Task to restore, revive, move on in time or
cancel, and no duplicate to cancel. Rows at or beyond now + horizon were not wanted (no plan
reaches past its horizon, and 0 and 4 keep the last one's no later than now's), and
reconciliation keeps them as they are; 5 also says none of them has come into the horizon,
since `covered_until` is no later than the first of them. Nothing remains to do.

The checks are per page of a sweep, in one query, outside the reconciliation's transaction: a
CarePlan changed just after is reconciled from its change event, or by the next sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, FromClause, String, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore import CurrentVersions, IndexedValues
from fhirstore.wire import OCCURRENCE_SYSTEM
from scheduler.policy import SchedulePolicy
from scheduler.requests import READERS
from scheduler.tables import schedule_plans, schedule_references, schedule_tasks

_PATIENT = "Patient/"


async def settled(
    conn: AsyncConnection, careplan_ids: Sequence[str], *, now: datetime, policy: SchedulePolicy
) -> set[str]:
    """Those of `careplan_ids` that have nothing to do at `now` (see the module docstring)."""
    p = schedule_plans.c
    ids = list(careplan_ids)
    careplan = CurrentVersions("CarePlan", "careplan")
    patient = CurrentVersions("Patient", "patient")
    plans = schedule_plans.outerjoin(careplan.rows, careplan.on(p.careplan_id)).outerjoin(
        patient.rows, patient.on(func.substr(p.patient, len(_PATIENT) + 1))
    )
    query = (
        select(p.careplan_id)
        .select_from(plans)
        .where(
            p.careplan_id.in_(ids),
            _same_careplan(careplan),
            patient.version_id.is_not_distinct_from(p.patient_version),
            p.reconciled_at <= now,
            p.policy == policy.fingerprint,
            p.covered_until >= now + policy.horizon,
            ~_request_changed(ids),
            ~_task_astray(ids, now, policy, dialect=conn.dialect.name),
        )
    )
    return set((await conn.execute(query)).scalars())


def _same_careplan(careplan: CurrentVersions) -> ColumnElement[bool]:
    """The CarePlan is at the version planned, or was deleted (or unknown) and still is."""
    p, c = schedule_plans.c, careplan
    live = and_(c.version_id == p.version_id, c.deleted.is_(False))
    gone = or_(c.id.is_(None), c.deleted.is_(True))
    return or_(live, and_(p.version_id.is_(None), gone))


def _request_changed(careplan_ids: Sequence[str]) -> ColumnElement[bool]:
    """A request the plan was made from is no longer as it was then (point 3 of the module
    docstring), or is of a type Herald no longer reads.

    One outer join per type Herald reads, each matching only its type's rows; the reference
    rows are limited to the page's CarePlans, as in `_task_astray`."""
    r = schedule_references.c
    rows: FromClause = schedule_references
    changed: list[ColumnElement[bool]] = [r.res_type.not_in(sorted(READERS))]
    for n, resource_type in enumerate(sorted(READERS)):
        request = CurrentVersions(resource_type, f"request_{n}")
        rows = rows.outerjoin(request.rows, and_(r.res_type == resource_type, request.on(r.res_id)))
        # Two-valued on purpose: a NULL here would read as "unchanged" once negated.
        live = and_(
            request.version_id.is_not_distinct_from(r.version_id), request.deleted.is_(False)
        )
        gone = and_(r.version_id.is_(None), or_(request.id.is_(None), request.deleted.is_(True)))
        changed.append(and_(r.res_type == resource_type, ~or_(live, gone)))
    return (
        select(r.careplan_id)
        .select_from(rows)
        .where(
            r.careplan_id == schedule_plans.c.careplan_id,
            r.careplan_id.in_(careplan_ids),
            or_(*changed),
        )
        .exists()
    )


def _task_astray(
    careplan_ids: Sequence[str], now: datetime, policy: SchedulePolicy, *, dialect: str
) -> ColumnElement[bool]:
    """A row of the plan's, for an occurrence not yet missed, that reconciling would act on
    (points 6-8 of the module docstring).

    The rows are also limited to the page's CarePlans: PostgreSQL answers the NOT EXISTS
    with a hash anti join, and without that limit it judged every row of every CarePlan for
    each page (a sweep over 10,000 CarePlans took 25 s instead of 3 s)."""
    t = schedule_tasks.c
    task = CurrentVersions("Task", "task")
    rows = schedule_tasks.outerjoin(task.rows, task.on(t.task_id))
    edited = and_(task.deleted.is_(False), task.version_id != t.task_version)
    gone = or_(task.id.is_(None), task.deleted.is_(True))
    # What reconciling repairs about a Task the schedule wants: restore, revive, duplicates.
    to_repair = or_(gone, edited, t.state == "unscheduled", _duplicated(dialect))
    return (
        select(t.task_id)
        .select_from(rows)
        .where(
            t.careplan_id == schedule_plans.c.careplan_id,
            t.careplan_id.in_(careplan_ids),
            t.start >= now - policy.grace,
            or_(
                t.due_at <= now,
                and_(t.wanted.is_(True), to_repair),
                # Not beyond the horizon: not judged (the module docstring, 8).
                and_(t.start >= now, t.start < now + policy.horizon, edited),
            ),
        )
        .exists()
    )


def _duplicated(dialect: str) -> ColumnElement[bool]:
    """Another Task, requested or ready, carries the row's occurrence identifier (the one
    `scheduler.task.occurrence_key` gave it).

    The identifier is rebuilt from the row rather than read from the row's own Task's
    identifier entry in the search index: that join is one more index lookup per row (this
    check took 3.1 s instead of 1.9 s over 10,000 CarePlans, 280,000 rows, on SQLite),
    and it would trust the identifier of a Task Herald keeps at a version it did not write
    (moved on, or past its time), which a person may have changed."""
    t = schedule_tasks.c
    other = IndexedValues("Task", "identifier", "other")
    status = IndexedValues("Task", "status", "status")
    identifier = (
        "CarePlan/"
        + t.careplan_id
        + "/activity/"
        + t.activity
        + "/"
        + _utc_seconds(t.start, dialect)
    )
    return exists().where(
        other.of_param,
        other.code == identifier,
        other.system == OCCURRENCE_SYSTEM,
        other.resource_id != t.task_id,
        status.on(other.resource_id),
        status.code.in_(("requested", "ready")),
    )


def _utc_seconds(column: ColumnElement[Any], dialect: str) -> ColumnElement[str]:
    """A UTC timestamp column as `occurrence_key` writes it: 2026-03-20T08:00:00Z."""
    if dialect == "postgresql":
        utc = func.timezone("UTC", column)
        return func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS"Z"', type_=String)
    return func.strftime("%Y-%m-%dT%H:%M:%SZ", column, type_=String)
