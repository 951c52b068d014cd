"""`ActivitySchedule`: one schedule a CarePlan activity contributes, and what its Tasks carry.

An activity written inline (`activity.detail`) has one, read from its `scheduled[x]`; one that
refers to a request (a MedicationRequest's dosage instructions, a ServiceRequest's occurrence,
an Appointment's start) has one per schedule the request holds. The planner (scheduler/plan.py)
expands each with the Timing engine and builds a Task per occurrence from the rest.

`NotScheduled` carries the reason an activity (or a request it refers to) gives no schedule at
all, in words the author can act on; it is reported, never guessed around. `PartNotScheduled` is
the same for one part of a request whose other parts are scheduled (a dosage instruction taken
as needed beside one taken twice a day).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo


class NotScheduled(Exception):
    """The activity gives no schedule; `reason` says why and what to change."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PartNotScheduled:
    """A part of a request that gives no schedule, reported under `key` (the key its Tasks
    would have had) while the request's other parts are scheduled."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class ActivitySchedule:
    """One schedule of an activity.

    `timing` is in the shape the Timing engine reads (`scheduledTiming`, `scheduledPeriod` or
    `scheduledString`); `source` names where it came from in a reason about it ("" for the
    activity's own detail, else e.g. "MedicationRequest/abc dosageInstruction[1].timing").
    Occurrences before `not_before` or from `until` on are left out (e.g. a prescription's
    `dispenseRequest.validityPeriod`); `starts` is where a schedule without bounds starts
    (None: the CarePlan's start).
    """

    key: str  # the activity key the Tasks are identified by (unique within the CarePlan)
    timing: Mapping[str, Any]
    description: str
    source: str = ""
    code: Mapping[str, Any] | None = None
    focus: Mapping[str, Any] | None = None  # Task.focus: the request the Tasks carry out
    inputs: tuple[Mapping[str, Any], ...] = ()  # Task.input (a dose, a questionnaire)
    starts: datetime | None = None
    not_before: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a request reader knows besides the request: the activity key it is scheduled
    under, the reference as the CarePlan wrote it, the CarePlan's patient and their zone, and
    how long before an Appointment its reminder falls due (SchedulePolicy.appointment_lead)."""

    key: str
    reference: Mapping[str, Any]  # activity.reference (a Reference)
    target: str  # "Type/id" it resolves to
    patient: str | None  # "Patient/{id}" of the CarePlan
    zone: ZoneInfo
    appointment_lead: timedelta
