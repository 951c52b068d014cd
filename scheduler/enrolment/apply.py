"""PlanDefinition `$apply` for one patient: the CarePlan a plan makes for them, and the report
of what of the plan was not applied (pure: no I/O, no clock of its own).

Each action (flattened: scheduler/enrolment/actions.py) becomes a CarePlan activity
(scheduler/enrolment/activity.py), its timing resolved against the enrolment start
(scheduler/enrolment/timing.py). A `relatedAction` with an offset makes an action's timing
relative to the related action's start (or end) instead.

The CarePlan is `active`, intent `plan`, so the scheduler schedules it once stored. It names the
plan it instantiates (`instantiatesCanonical`, when the PlanDefinition has a url) and carries an
identifier derived from (PlanDefinition, Patient): storing it with that identifier as the
condition (If-None-Exist) makes a second enrolment a no-op. What was not applied is reported
in a contained OperationOutcome the CarePlan's `supportingInfo` points at, so the report stays
with the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fhirstore.wire import ENROLMENT_SYSTEM
from scheduler.enrolment.actions import FlatAction, Note, flattened
from scheduler.enrolment.activity import Definitions, activity_of, definition_of
from scheduler.enrolment.dynamic_value import apply_dynamic_values
from scheduler.enrolment.timing import Frame, Unresolved, shifted
from scheduler.plan import patient_zone
from scheduler.policy import PlanTag
from scheduler.task import local_datetime
from scheduler.timing import Unschedulable
from scheduler.timing.primitives import duration

# The identifier system of enrolled CarePlans; its value is `enrolment_key`.
REPORT_ID = "apply-report"
_BEFORE = frozenset({"before-start", "before", "before-end"})
_FROM_END = frozenset({"before-end", "concurrent-with-end", "after-end", "after"})


@dataclass(frozen=True, slots=True)
class Subject:
    """The patient a plan is applied to, as far as applying needs."""

    patient_id: str
    zone: ZoneInfo
    birth_date: date | None
    # What dynamicValue paths read (`%subject`, `%patient`); may hold only some elements.
    patient: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Options:
    """The operation's other parameters: the enrolment start (UTC), now, and whom the
    CarePlan names (references as given)."""

    start: datetime
    now: datetime
    encounter: str | None = None
    practitioner: str | None = None
    organization: str | None = None
    tag: PlanTag | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    careplan: dict[str, Any]
    notes: tuple[Note, ...]


def enrolment_key(plan_id: str, patient_id: str) -> str:
    """The enrolled CarePlan's identifier value: one per (PlanDefinition, Patient)."""
    return f"PlanDefinition/{plan_id}/Patient/{patient_id}"


def plan_canonical(plan: Mapping[str, Any]) -> str | None:
    url, version = plan.get("url"), plan.get("version")
    if not isinstance(url, str):
        return None
    return f"{url}|{version}" if isinstance(version, str) else url


def plan_notes(plan: Mapping[str, Any]) -> list[Note]:
    """What of the PlanDefinition as a whole is not applied."""
    notes: list[Note] = []
    status = plan.get("status")
    if status != "active":
        notes.append(Note("PlanDefinition", f"its status is {status!r}, not 'active'"))
    if plan.get("goal"):
        notes.append(Note("PlanDefinition.goal", "goals are not copied to the CarePlan"))
    if plan.get("url") is None:
        notes.append(
            Note(
                "PlanDefinition.url",
                "the PlanDefinition has no url, so the CarePlan cannot name it in"
                " instantiatesCanonical",
            )
        )
    return notes


def apply_plan(
    plan: Mapping[str, Any],
    plan_id: str | None,
    definitions: Definitions,
    subject: Subject,
    options: Options,
    notes: Sequence[Note] = (),
) -> Applied:
    """The CarePlan `plan` makes for `subject`, and what of the plan it does not apply (after
    `notes`, e.g. on the operation's own parameters)."""
    notes = [*notes, *plan_notes(plan)]
    frame = Frame(subject.zone, subject.birth_date)
    flat = flattened(plan, notes)
    built = _activities(plan, flat, definitions, frame, options.start, subject.patient, notes)
    careplan = _careplan(plan, plan_id, subject, options)
    activities = [built[f.key] for f in flat if f.key in built]
    if activities:
        careplan["activity"] = activities
    if notes:
        careplan["contained"] = [_report(notes)]
        careplan["supportingInfo"] = [
            {"reference": f"#{REPORT_ID}", "display": "what of the PlanDefinition was not applied"}
        ]
    return Applied(careplan, tuple(notes))


def _careplan(
    plan: Mapping[str, Any], plan_id: str | None, subject: Subject, options: Options
) -> dict[str, Any]:
    zone = subject.zone
    careplan: dict[str, Any] = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{subject.patient_id}"},
        "period": {"start": local_datetime(options.start, zone)},
        "created": local_datetime(options.now, zone),
    }
    if options.tag is not None:
        tag = {"code": options.tag.code}
        if options.tag.system:
            tag["system"] = options.tag.system
        careplan["meta"] = {"tag": [tag]}
    if plan_id is not None:
        careplan["identifier"] = [
            {"system": ENROLMENT_SYSTEM, "value": enrolment_key(plan_id, subject.patient_id)}
        ]
    canonical = plan_canonical(plan)
    if canonical is not None:
        careplan["instantiatesCanonical"] = [canonical]
    for element in ("title", "description"):
        if isinstance(plan.get(element), str):
            careplan[element] = plan[element]
    if options.encounter:
        careplan["encounter"] = {"reference": options.encounter}
    authors = [options.practitioner, options.organization]
    named = [{"reference": r} for r in authors if r]
    if named:
        careplan["author"] = named[0]
        if len(named) > 1:
            careplan["contributor"] = named[1:]
    return careplan


def _report(notes: list[Note]) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "id": REPORT_ID,
        "issue": [
            {
                "severity": "warning",
                "code": "not-supported",
                "diagnostics": note.text,
                "expression": [_expression(note.where)],
            }
            for note in notes
        ],
    }


def _expression(where: str) -> str:
    if where.startswith(("PlanDefinition", "$apply")):
        return where
    return f"PlanDefinition.{where}"


def _activities(
    plan: Mapping[str, Any],
    flat: list[FlatAction],
    definitions: Definitions,
    frame: Frame,
    start: datetime,
    patient: Mapping[str, Any],
    notes: list[Note],
) -> dict[str, dict[str, Any]]:
    """Each action's activity by key, related actions resolved after what they relate to,
    with the dynamic values of its definition and then its own (scheduler/enrolment/
    dynamic_value.py)."""
    contained = {
        c["id"]: c for c in plan.get("contained") or () if isinstance(c, Mapping) and "id" in c
    }
    # When each action resolved so far starts and ends (None: left out).
    windows: dict[str, tuple[datetime, datetime | None] | None] = {}
    built: dict[str, dict[str, Any]] = {}
    pending = list(flat)
    keys = frozenset(f.key for f in flat)
    while pending:
        waiting: list[FlatAction] = []
        for action in pending:
            try:
                base = _base(action, windows, keys, start, frame, notes)
            except Unresolved as error:
                notes.append(Note(action.where, f"{error.reason}; left out"))
                windows[action.key] = None
                continue
            if base is None:
                waiting.append(action)
                continue
            definition = definition_of(action.action, contained, definitions)
            activity = activity_of(action, definition, base, frame, notes)
            windows[action.key] = activity.window if activity else None
            if activity is not None:
                detail = activity.body["detail"]
                found = (definition or ("", None))[1] or {}
                named = f"ActivityDefinition {definition[0]}" if definition else None
                apply_dynamic_values(
                    detail, found.get("dynamicValue"), patient, action.where, notes, named
                )
                values = action.action.get("dynamicValue")
                apply_dynamic_values(detail, values, patient, action.where, notes)
                built[action.key] = activity.body
        if len(waiting) == len(pending):
            for action in waiting:
                notes.append(
                    Note(
                        action.where,
                        "its relatedAction forms a cycle with other actions, so it has no"
                        " time to start from; left out",
                    )
                )
            break
        pending = waiting
    return built


def _base(
    action: FlatAction,
    windows: Mapping[str, tuple[datetime, datetime | None] | None],
    keys: frozenset[str],
    start: datetime,
    frame: Frame,
    notes: list[Note],
) -> datetime | None:
    """Where the action's relative timing counts from: the enrolment start, or its (first)
    related action's start or end with the offset (None: the related action is not resolved
    yet). Raises Unresolved."""
    related = [r for r in action.action.get("relatedAction") or () if isinstance(r, Mapping)]
    if not related:
        return start
    if len(related) > 1:
        notes.append(Note(action.where, "only its first relatedAction is applied"))
    first = related[0]
    target = first.get("actionId")
    if not isinstance(target, str) or target not in keys:
        raise Unresolved(f"its relatedAction names action {target!r}, which the plan does not have")
    if target not in windows:
        return None
    window = windows[target]
    if window is None:
        raise Unresolved(f"its relatedAction names action {target!r}, which is left out")
    related_start, related_end = window
    relationship = first.get("relationship")
    anchor = related_end if relationship in _FROM_END and related_end else related_start
    offset = first.get("offsetDuration")
    if offset is None and isinstance(first.get("offsetRange"), Mapping):
        notes.append(Note(action.where, "of its relatedAction's offsetRange, the low is applied"))
        offset = first["offsetRange"].get("low")
    if offset is None:
        return anchor
    try:
        length = duration(offset, "relatedAction.offset")
    except Unschedulable as error:
        raise Unresolved(error.reason) from None
    return shifted(anchor, length, frame.zone, sign=-1 if relationship in _BEFORE else 1)


def subject_of(patient: Mapping[str, Any], default_zone: ZoneInfo) -> Subject:
    """A stored Patient as the subject of an enrolment: its zone (the timezone extension,
    else `default_zone`) and its birth date (None when it has none, or a partial one)."""
    born = patient.get("birthDate")
    try:
        birth_date = date.fromisoformat(born) if isinstance(born, str) else None
    except ValueError:
        birth_date = None
    return Subject(str(patient["id"]), patient_zone(patient, default_zone), birth_date, patient)
