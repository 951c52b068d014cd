"""The scheduler's tables: what it made of each CarePlan (`schedule_plans`), the requests it
was planned from (`schedule_references`) and the Tasks it owes something (`schedule_tasks`),
read and written by scheduler/bookkeeping.py.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text, true

from fhirstore.db import UtcDateTime, metadata

# One row per CarePlan the scheduler has looked at: what it made of it, and for whom.
schedule_plans = Table(
    "schedule_plans",
    metadata,
    Column("careplan_id", String(64), primary_key=True),
    # The CarePlan version last reconciled (None once the CarePlan is deleted).
    Column("version_id", Integer, nullable=True),
    # "Patient/{id}" the Tasks are for: a change of the Patient's time zone reschedules.
    Column("patient", String(128), nullable=True),
    Column("zone", String(64), nullable=False),  # the IANA zone its Tasks' times are in
    # Whether the CarePlan is scheduled at all (active, plan or order, tagged if required).
    Column("scheduled", Boolean, nullable=False),
    # JSON: why the CarePlan or some of its activities are not materialised ([] when all are).
    Column("report", Text, nullable=False),
    Column("reconciled_at", UtcDateTime, nullable=False),
    # What a sweep compares to leave the CarePlan alone (see scheduler/settled.py): the
    # Patient version it was planned with (None: no Patient), the policy's fingerprint, and
    # the instant up to which its Tasks cover the schedule (once now + horizon passes it, it
    # wants more; None: reconcile it at the next sweep).
    Column("patient_version", Integer, nullable=True),
    Column("policy", String(64), nullable=True),
    Column("covered_until", UtcDateTime, nullable=True),
    Index("ix_schedule_plans_patient", "patient"),
)

# One row per request a scheduled CarePlan's activities refer to, when it was last reconciled:
# a change to the request reschedules the CarePlan (scheduler/service.py), and a sweep plans it
# again when the request is no longer at that version (scheduler/settled.py).
schedule_references = Table(
    "schedule_references",
    metadata,
    Column("careplan_id", String(64), primary_key=True),
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    # The request's version it was planned with (None: not stored, or deleted, then).
    Column("version_id", Integer, nullable=True),
    Index("ix_schedule_references_request", "res_type", "res_id"),
)

# One row per Task the scheduler made for an occurrence, and what it does to it next.
schedule_tasks = Table(
    "schedule_tasks",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("careplan_id", String(64), nullable=False),
    # The activity key; a request's later schedules add `/{i}` (scheduler/requests).
    Column("activity", String(128), nullable=False),
    Column("start", UtcDateTime, nullable=False),  # the occurrence, UTC
    # The Task version Herald wrote or last saw: a different current version means someone
    # else changed the Task since.
    Column("task_version", Integer, nullable=False),
    # requested | ready | missed | unscheduled | released (moved on by someone: hands off)
    Column("state", String(16), nullable=False),
    # When the Task next needs Herald (ready at start - lead, missed at start + grace).
    Column("due_at", UtcDateTime, nullable=True),
    # Whether the schedule wanted the occurrence when the CarePlan was last reconciled.
    # The server default is the migration's (0005), which gave existing rows True.
    Column("wanted", Boolean, nullable=False, server_default=true()),
    Index("ix_schedule_tasks_plan", "careplan_id", "start"),
    Index("ix_schedule_tasks_due", "due_at"),
)
