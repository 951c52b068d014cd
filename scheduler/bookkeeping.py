"""The scheduler's own rows: what it made of each CarePlan (`schedule_plans`), the requests it
was planned from (`schedule_references`) and the Tasks it owes something (`schedule_tasks`),
read and written inside the caller's transaction; and from them what a patient's CarePlans hold
within the window, for the limits (scheduler/admission.py, docs/limits.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import Row, Subquery, and_, delete, func, insert, or_, select, text, union
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore import CurrentVersions, IndexedValues
from fhirstore.db import CAREPLAN_LOCK_CLASS, int4_key
from fhirstore.db.upsert import upsert
from scheduler.tables import schedule_plans, schedule_references, schedule_tasks
from scheduler.task import TaskState

_CHUNK = 500
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: str
    careplan_id: str
    activity: str
    start: datetime
    task_version: int
    state: TaskState
    due_at: datetime | None
    wanted: bool  # by the schedule, when its CarePlan was last reconciled


@dataclass(frozen=True, slots=True)
class PlanRow:
    careplan_id: str
    version_id: int | None
    patient: str | None
    zone: str
    scheduled: bool
    report: str  # JSON
    reconciled_at: datetime
    # What lets a sweep leave the CarePlan alone (scheduler/settled.py).
    patient_version: int | None  # the Patient's version it was planned with
    policy: str | None  # SchedulePolicy.fingerprint
    covered_until: datetime | None  # None: reconcile it at the next sweep


@dataclass(frozen=True, slots=True)
class ReferenceRow:
    """A request a CarePlan was planned from, and its version then (None: not stored, or
    deleted): a change to it reschedules the CarePlan."""

    careplan_id: str
    res_type: str
    res_id: str
    version_id: int | None


def _task_row(row: Row[Any]) -> TaskRow:
    return TaskRow(**row._mapping)


async def lock_plans(conn: AsyncConnection, careplan_ids: Sequence[str]) -> None:
    """One reconciler per CarePlan at a time, across processes (PostgreSQL, until commit).

    Locks are taken in one order, so two reconcilers of overlapping batches cannot deadlock.
    SQLite's single writer needs nothing more.
    """
    if conn.dialect.name != "postgresql":
        return
    keys = sorted({int4_key(f"CarePlan/{i}") for i in careplan_ids})
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(:c, k) FROM unnest(CAST(:keys AS int[])) AS k"),
        {"c": CAREPLAN_LOCK_CLASS, "keys": keys},
    )


async def plan_rows(conn: AsyncConnection, careplan_ids: Sequence[str]) -> dict[str, PlanRow]:
    found: dict[str, PlanRow] = {}
    for chunk in _chunks(careplan_ids):
        for row in await conn.execute(
            select(schedule_plans).where(schedule_plans.c.careplan_id.in_(chunk))
        ):
            found[row.careplan_id] = PlanRow(
                row.careplan_id,
                row.version_id,
                row.patient,
                row.zone,
                row.scheduled,
                row.report,
                row.reconciled_at,
                row.patient_version,
                row.policy,
                row.covered_until,
            )
    return found


async def task_rows(
    conn: AsyncConnection, careplan_ids: Sequence[str], *, since: datetime
) -> list[TaskRow]:
    """The plans' Task rows for occurrences from `since` on (locked on PostgreSQL)."""
    found: list[TaskRow] = []
    t = schedule_tasks.c
    for chunk in _chunks(careplan_ids):
        query = select(schedule_tasks).where(and_(t.careplan_id.in_(chunk), t.start >= since))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found.extend(_task_row(row) for row in await conn.execute(query))
    return found


async def claim_due(conn: AsyncConnection, now: datetime, limit: int) -> list[TaskRow]:
    """Rows due by `now`, earliest first; on PostgreSQL locked, skipping rows another
    process holds, so several schedulers share the wake-ups without doing one twice."""
    t = schedule_tasks.c
    query = (
        select(schedule_tasks)
        .where(and_(t.due_at.is_not(None), t.due_at <= now))
        .order_by(t.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [_task_row(row) for row in await conn.execute(query)]


async def save_tasks(conn: AsyncConnection, rows: Sequence[TaskRow]) -> None:
    for chunk in _chunks(rows):
        await upsert(conn, schedule_tasks, [_columns(r) for r in chunk], key=["task_id"])


async def save_plans(conn: AsyncConnection, rows: Sequence[PlanRow]) -> None:
    for chunk in _chunks(rows):
        await upsert(conn, schedule_plans, [_columns(r) for r in chunk], key=["careplan_id"])


async def reference_rows(
    conn: AsyncConnection, careplan_ids: Sequence[str]
) -> dict[str, frozenset[ReferenceRow]]:
    """The requests each of the CarePlans was last planned from (none: not in here)."""
    found: dict[str, set[ReferenceRow]] = {}
    for chunk in _chunks(careplan_ids):
        rows = await conn.execute(
            select(schedule_references).where(schedule_references.c.careplan_id.in_(chunk))
        )
        for row in rows:
            found.setdefault(row.careplan_id, set()).add(ReferenceRow(**row._mapping))
    return {i: frozenset(refs) for i, refs in found.items()}


async def save_references(
    conn: AsyncConnection, references: dict[str, frozenset[ReferenceRow]]
) -> None:
    """Replace the reference rows of each CarePlan in `references` with those given."""
    r = schedule_references.c
    for chunk in _chunks(sorted(references)):
        await conn.execute(delete(schedule_references).where(r.careplan_id.in_(chunk)))
    rows = [_columns(row) for refs in references.values() for row in refs]
    for part in _chunks(rows):
        await conn.execute(insert(schedule_references), list(part))


def _columns(row: TaskRow | PlanRow | ReferenceRow) -> dict[str, object]:
    # Not dataclasses.asdict: that deep-copies every value, and rows come by the thousand.
    return {name: getattr(row, name) for name in _NAMES[type(row)]}


_NAMES = {kind: tuple(f.name for f in fields(kind)) for kind in (TaskRow, PlanRow, ReferenceRow)}


async def forget_tasks(conn: AsyncConnection, before: datetime) -> int:
    """Drop rows of occurrences before `before` that need nothing more (the Tasks stay)."""
    t = schedule_tasks.c
    result = await conn.execute(
        delete(schedule_tasks).where(and_(t.start < before, t.due_at.is_(None)))
    )
    return result.rowcount or 0


async def plans_concerned(
    conn: AsyncConnection, patients: Sequence[str], requests: Sequence[str]
) -> set[str]:
    """The CarePlans of any of `patients` (`Patient/id`) and those last planned from any of
    `requests` (`Type/id`): one statement for every 500 of them together."""
    p, r = schedule_plans.c, schedule_references.c
    # (None, patient) or (request type, request id)
    wanted: list[tuple[str | None, str]] = [(None, key) for key in sorted(set(patients))]
    wanted += [(t, i) for t, _, i in (key.partition("/") for key in sorted(set(requests)))]
    found: set[str] = set()
    for chunk in _chunks(wanted):
        by_type: dict[str | None, list[str]] = {}
        for resource_type, value in chunk:
            by_type.setdefault(resource_type, []).append(value)
        queries = [
            select(p.careplan_id).where(p.patient.in_(values))
            if resource_type is None
            else select(r.careplan_id).where(r.res_type == resource_type, r.res_id.in_(values))
            for resource_type, values in by_type.items()
        ]
        query = queries[0] if len(queries) == 1 else union(*queries)
        found.update((await conn.execute(query)).scalars())
    return found


def _careplan_ids(after: str = "") -> Subquery:
    """Every CarePlan id after `after`: stored (live or deleted) or known to the scheduler."""
    r, p = CurrentVersions("CarePlan"), schedule_plans.c
    return union(
        select(r.id.label("id")).where(and_(r.of_type, r.id > after)),
        select(p.careplan_id.label("id")).where(p.careplan_id > after),
    ).subquery()


async def careplan_ids(conn: AsyncConnection, *, after: str, limit: int) -> list[str]:
    """The next `limit` CarePlan ids after `after`, in id order."""
    ids = _careplan_ids(after)
    rows = await conn.execute(select(ids.c.id).order_by(ids.c.id).limit(limit))
    return list(rows.scalars())


async def count_careplans(conn: AsyncConnection) -> int:
    ids = _careplan_ids()
    return int((await conn.execute(select(func.count()).select_from(ids))).scalar_one())


def _chunks(items: Sequence[_T]) -> list[Sequence[_T]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


async def skipped_activities(conn: AsyncConnection) -> list[tuple[str, str | None, str]]:
    """(CarePlan id, activity, reason) of what scheduled CarePlans could not materialise."""
    found: list[tuple[str, str | None, str]] = []
    p = schedule_plans.c
    rows = await conn.execute(
        select(p.careplan_id, p.report).where(p.scheduled.is_(True)).order_by(p.careplan_id)
    )
    for careplan_id, report in rows:
        for skipped in orjson.loads(report)["skipped"]:
            found.append((careplan_id, skipped["activity"], skipped["reason"]))
    return found


async def planned_task_counts(
    conn: AsyncConnection,
    patient: str,
    *,
    excluding: Sequence[str],
    since: datetime,
    until: datetime,
) -> dict[str, int]:
    """By CarePlan of `patient` (other than `excluding`), how many Tasks its schedule wanted
    for occurrences in [since, until) when last reconciled. Only CarePlans reconciled at their
    current version are here: the others are `unplanned_careplans`."""
    t, p, r = schedule_tasks.c, schedule_plans.c, CurrentVersions("CarePlan")
    rows = await conn.execute(
        select(p.careplan_id, func.count())
        .select_from(schedule_tasks)
        .join(schedule_plans, p.careplan_id == t.careplan_id)
        .join(r.rows, r.on(p.careplan_id))
        .where(
            p.patient == patient,
            p.version_id == r.version_id,
            p.careplan_id.not_in(list(excluding)),
            t.wanted.is_(True),
            t.start >= since,
            t.start < until,
        )
        .group_by(p.careplan_id)
    )
    return {careplan_id: int(n) for careplan_id, n in rows}


async def unplanned_careplans(
    conn: AsyncConnection, patient: str, *, excluding: Sequence[str]
) -> dict[str, str]:
    """The bodies, by id, of `patient`'s live CarePlans (other than `excluding`) that the
    scheduler has not reconciled at their current version yet: written moments ago, or while
    no scheduler ran."""
    r, p, s = CurrentVersions("CarePlan"), schedule_plans.c, IndexedValues("CarePlan", "subject")
    query = (
        select(r.id, r.body)
        .join(s.rows, s.on(r.id))
        .outerjoin(schedule_plans, p.careplan_id == r.id)
        .where(
            r.of_type,
            r.deleted.is_(False),
            s.code == patient,
            r.id.not_in(list(excluding)),
            or_(p.version_id.is_(None), p.version_id != r.version_id),
        )
    )
    return {i: body for i, body in await conn.execute(query) if body is not None}


async def patients_task_counts(
    conn: AsyncConnection,
    patients: Sequence[str],
    *,
    excluding: Sequence[str],
    since: datetime,
    until: datetime,
) -> dict[str, int]:
    """For each of `patients`, how many Tasks the schedules of their CarePlans other than
    `excluding` wanted for occurrences in [since, until) when last reconciled."""
    t, p = schedule_tasks.c, schedule_plans.c
    counts = dict.fromkeys(patients, 0)
    for chunk in _chunks(patients):
        rows = await conn.execute(
            select(p.patient, func.count())
            .select_from(schedule_tasks)
            .join(schedule_plans, p.careplan_id == t.careplan_id)
            .where(
                p.patient.in_(chunk),
                p.careplan_id.not_in(list(excluding)),
                t.wanted.is_(True),
                t.start >= since,
                t.start < until,
            )
            .group_by(p.patient)
        )
        counts.update({patient: int(n) for patient, n in rows})
    return counts
