"""Appointment: one reminder Task, due `appointment_lead` before its `start`
(HERALD_SCHEDULER_APPOINTMENT_LEAD_HOURS).

The reminder is the Task's occurrence: it falls due (goes `ready`, less the scheduler's own
lead) at `start - appointment_lead`, and its `executionPeriod` runs from then to the end of the
appointment (`end`, else its `start`). Its description names the appointment's local date and
time in the patient's zone and what it is for (`description`, else `serviceType`,
`appointmentType`). An appointment booked later than the lead before it gets its reminder at
once (within the grace period, as any Task).

Scheduled: `status` booked (a proposed or pending one is not agreed yet; arrived, fulfilled,
cancelled, noshow, checked-in, entered-in-error and waitlist need no reminder), with a `start`,
and not declined by the patient (their participant's `status`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.requests.schedule import ActivitySchedule, NotScheduled, RequestContext
from scheduler.requests.subject import patient_reference
from scheduler.requests.values import concept_text, instant, text
from scheduler.task import local_datetime

BOOKED = "booked"


def appointment_schedules(
    request: Mapping[str, Any], context: RequestContext
) -> list[ActivitySchedule]:
    target = context.target
    status = request.get("status")
    if status != BOOKED:
        raise NotScheduled(
            f"{target} has status {status!r}: only booked appointments get a reminder"
        )
    if request.get("start") is None:
        raise NotScheduled(f"{target} has no start: it has no time to remind of yet")
    if any(
        patient_reference(p.get("actor")) == context.patient and p.get("status") == "declined"
        for p in request.get("participant") or ()
        if isinstance(p, Mapping)
    ):
        raise NotScheduled(f"{target} was declined by {context.patient}: no reminder")
    start = instant(request["start"], f"{target} start", context.zone)
    end = start
    if request.get("end") is not None:
        end = instant(request["end"], f"{target} end", context.zone)
        if end < start:
            raise NotScheduled(f"{target} ends before it starts")
    remind = start - context.appointment_lead
    local = local_datetime(start, context.zone)
    what = (
        text(request.get("description"))
        or next((c for c in map(concept_text, request.get("serviceType") or ()) if c), None)
        or concept_text(request.get("appointmentType"))
    )
    when = f"Appointment on {local[:10]} at {local[11:16]} ({context.zone.key})"
    return [
        ActivitySchedule(
            key=context.key,
            timing={"scheduledPeriod": {"start": remind.isoformat(), "end": end.isoformat()}},
            description=f"{when}: {what}" if what else when,
            source=f"{target} start",
            focus=context.reference,
        )
    ]
