"""From a CarePlan to the Tasks its schedule wants now (pure: no I/O, no clock of its own).

Which CarePlans are scheduled: `status = active` with `intent` plan or order (a proposal or an
option is not yet agreed care, so it gets no Tasks), carrying the configured meta tag when the
policy names one. Which activities: those with a `detail` whose status is not cancelled, stopped,
completed, entered-in-error or on-hold, and which is not `doNotPerform`; and those whose
`reference` points at a request Herald reads (scheduler/activity.py, scheduler/requests/), by
that request's own rules. Everything left out is reported with a reason a person can act on.

A plan keeps to the limits (`ScheduleLimits`, docs/limits.md): activities beyond the first so
many are reported, and a plan with more Tasks than a CarePlan may have keeps its earliest ones
(`limited`; the reconciler uses the same for the patient's limit), reporting the rest.

A plan also says until when its Tasks cover the schedule (`covered_until`): the start of the
first occurrence it leaves out. Until the horizon reaches that instant, the same CarePlan under
the same policy wants no Task the plan does not have, so a sweep can leave it alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhirstore.validation import ID_PATTERN
from fhirstore.wire import OCCURRENCE_SYSTEM
from scheduler.activity import Requests, activity_schedules
from scheduler.policy import TIMEZONE_EXTENSION, PlanTag, ScheduleLimits, SchedulePolicy
from scheduler.requests import ActivitySchedule, NotScheduled, PartNotScheduled
from scheduler.requests.subject import patient_reference
from scheduler.task import PlannedTask, local_datetime, occurrence_key, task_id
from scheduler.timing import Budget, Occurrence, Unschedulable, occurrences
from scheduler.timing.primitives import date_time
from scheduler.timing.wallclock import midnight, to_utc

SCHEDULED_INTENTS = frozenset({"plan", "order"})
ENDED_ACTIVITY = frozenset({"cancelled", "stopped", "completed", "entered-in-error", "on-hold"})
# More occurrences than this for one activity in the horizon are not materialised (reported).
MAX_TASKS_PER_ACTIVITY = 1_000
# Steps (occurrences computed) counting one CarePlan's schedules may take when it is written
# (scheduler/admission.py); planning it walks each count twice (the window and the next start),
# so it may take PLAN_STEPS. More is refused at write time, reported when planning.
COUNT_STEPS = 20_000
PLAN_STEPS = 3 * COUNT_STEPS
# How far past the horizon a plan looks for its next occurrence (none by then: look again then).
LOOKAHEAD = timedelta(days=366)
# Said without the window's dates: a CarePlan the sweep leaves alone keeps its report while the
# window moves on, and this stays true until an occurrence enters the window (then it is planned).
NO_REQUESTS: Requests = {}
NOTHING_DUE = (
    "no occurrence from now to the horizon, nor a past one still within its grace period: the"
    " schedule ended, or starts later"
)


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something not materialised: an activity (by key), or the whole CarePlan (None)."""

    activity: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    careplan_id: str
    patient: str | None  # "Patient/{id}" of the subject, when it is one
    zone: str  # the IANA zone its times are in
    scheduled: bool
    tasks: Mapping[str, PlannedTask]  # by Task id
    skipped: tuple[Skipped, ...]
    # The first occurrence not in `tasks` starts here (or later): until now + horizon passes
    # it, the plan wants nothing new.
    covered_until: datetime
    # (activity key, start) of the schedule's occurrences from an instant up to the window
    # (now - grace): what a reminder that went out before the window may stand for
    # (scheduler/slots.py). Computed only when asked.
    earlier: Callable[[datetime], frozenset[tuple[str, datetime]]] = field(
        default=lambda _: frozenset(), compare=False, repr=False
    )


def patient_of(careplan: Mapping[str, Any] | None) -> str | None:
    return patient_reference((careplan or {}).get("subject"))


def patient_zone(patient: Mapping[str, Any] | None, default: ZoneInfo) -> ZoneInfo:
    """The zone of the Patient's timezone extension, else `default` (also for a bad code)."""
    for extension in (patient or {}).get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == TIMEZONE_EXTENSION:
            code = extension.get("valueCode")
            try:
                return ZoneInfo(code) if isinstance(code, str) else default
            except (ZoneInfoNotFoundError, ValueError):
                return default
    return default


def plan_careplan(
    careplan_id: str,
    careplan: Mapping[str, Any] | None,
    *,
    zone: ZoneInfo,
    first_seen: datetime,
    now: datetime,
    policy: SchedulePolicy,
    requests: Requests = NO_REQUESTS,
) -> Plan:
    """The Tasks `careplan` (None: deleted) wants for occurrences in [now - grace, now +
    horizon): those not yet missed, up to the horizon. `first_seen` anchors a schedule that
    starts nowhere else (no bounds, no period.start, no created). `requests` holds the current
    body of each request its activities refer to (scheduler.activity.referenced)."""
    patient = patient_of(careplan)
    horizon_end = now + policy.horizon
    why_not = not_scheduled(careplan, policy.tag)
    if why_not is not None:
        skipped_plan = (Skipped(None, why_not),)
        return Plan(
            careplan_id, patient, zone.key, False, {}, skipped_plan, horizon_end + LOOKAHEAD
        )
    assert careplan is not None
    anchor = anchor_of(careplan, zone) or first_seen
    limits = policy.limits
    tasks: dict[str, PlannedTask] = {}
    skipped: list[Skipped] = []
    covered = [horizon_end + LOOKAHEAD]
    budget = Budget(PLAN_STEPS)
    planned_schedules: list[ActivitySchedule] = []
    for key, activity, _, reason in activities(careplan, limits.activities):
        if reason is not None:
            skipped.append(Skipped(key, reason))
            continue
        try:
            schedules = activity_schedules(
                key,
                activity,
                requests=requests,
                patient=patient,
                zone=zone,
                appointment_lead=policy.appointment_lead,
            )
        except NotScheduled as error:
            skipped.append(Skipped(key, error.reason))
            continue
        for schedule in schedules:
            if isinstance(schedule, PartNotScheduled):
                skipped.append(Skipped(schedule.key, schedule.reason))
                continue
            try:
                found, notes, next_start = _window(schedule, zone, anchor, now, policy, budget)
            except Unschedulable as error:
                where = f"{schedule.source}: " if schedule.source else ""
                skipped.append(Skipped(schedule.key, where + error.reason))
                continue
            skipped.extend(notes)
            covered.append(next_start)
            planned_schedules.append(schedule)
            for occurrence in found:
                planned = _planned(careplan_id, careplan, schedule, occurrence, zone)
                tasks[planned.id] = planned
    if not careplan.get("activity"):
        skipped.append(Skipped(None, "the CarePlan has no activity to schedule"))

    def earlier(start: datetime) -> frozenset[tuple[str, datetime]]:
        end, found = now - policy.grace, set[tuple[str, datetime]]()
        for schedule in planned_schedules:
            with contextlib.suppress(Unschedulable):  # read once already: not here
                occurring = _occurrences(
                    schedule, zone, anchor, start, end, policy, MAX_TASKS_PER_ACTIVITY, budget
                )
                found.update((schedule.key, o.start) for o in occurring)
        return frozenset(found)

    plan = Plan(careplan_id, patient, zone.key, True, tasks, tuple(skipped), min(covered), earlier)
    return limited(plan, limits.tasks_per_careplan, careplan_tasks_limit(limits))


def activities(
    careplan: Mapping[str, Any], most: int
) -> Iterator[tuple[str, Any, dict[str, Any] | None, str | None]]:
    """Each activity of a scheduled CarePlan: its key, the activity, its detail (None: it has
    none, e.g. it refers to a request), and the reason it is not scheduled (None: it is). Only
    the first `most` are scheduled (HERALD_LIMIT_CAREPLAN_ACTIVITIES)."""
    keys: set[str] = set()
    for index, activity in enumerate(careplan.get("activity") or ()):
        key = _activity_key(activity, index)
        if index >= most:
            yield key, activity, None, activities_limit(most)
            continue
        if key in keys:
            reason = (
                f"activity id {key!r} repeats an earlier activity's id:"
                " give each activity an id of its own"
            )
            yield key, activity, None, reason
            continue
        keys.add(key)
        detail = activity.get("detail") if isinstance(activity, dict) else None
        not_scheduled = _activity_not_scheduled(activity, detail)
        yield key, activity, (detail if isinstance(detail, dict) else None), not_scheduled


def activities_limit(most: int) -> str:
    return (
        f"beyond the first {most} activities (HERALD_LIMIT_CAREPLAN_ACTIVITIES): a CarePlan"
        " may have at most that many; split it into several CarePlans"
    )


def careplan_tasks_limit(limits: ScheduleLimits) -> str:
    return (
        f"a CarePlan may have at most {limits.tasks_per_careplan} Tasks within the horizon"
        " (HERALD_LIMIT_CAREPLAN_TASKS)"
    )


def patient_tasks_limit(limits: ScheduleLimits) -> str:
    return (
        f"a patient's CarePlans may have at most {limits.tasks_per_patient} Tasks within the"
        " horizon together (HERALD_LIMIT_PATIENT_TASKS)"
    )


def limited(plan: Plan, most: int, limit: str) -> Plan:
    """`plan` with only its earliest `most` Tasks (all when it has no more), the others
    reported as left out under `limit` (a sentence naming it); it covers the schedule only
    until the first Task left out."""
    if len(plan.tasks) <= most:
        return plan
    ordered = sorted(plan.tasks.values(), key=lambda t: (t.start, t.activity, t.id))
    kept, first_out = ordered[:most], ordered[most]
    note = Skipped(
        None,
        f"{len(ordered) - most} of the {len(ordered)} occurrences in the horizon are not"
        f" materialised: {limit}",
    )
    return replace(
        plan,
        tasks={t.id: t for t in kept},
        skipped=(*plan.skipped, note),
        covered_until=min(plan.covered_until, first_out.start),
    )


def _window(
    schedule: ActivitySchedule,
    zone: ZoneInfo,
    anchor: datetime,
    now: datetime,
    policy: SchedulePolicy,
    budget: Budget,
) -> tuple[list[Occurrence], list[Skipped], datetime]:
    """The activity's occurrences to materialise at `now`, what to report about them, and
    where the first one left out starts. Raises Unschedulable."""
    horizon_end = now + policy.horizon
    key = schedule.key
    # One activity never brings more than its CarePlan may have: no need to expand them.
    most = min(MAX_TASKS_PER_ACTIVITY, policy.limits.tasks_per_careplan)
    found = _occurrences(
        schedule, zone, anchor, now - policy.grace, horizon_end, policy, most + 1, budget
    )
    if len(found) > most:
        why = "" if most == MAX_TASKS_PER_ACTIVITY else f": {careplan_tasks_limit(policy.limits)}"
        too_many = Skipped(
            key,
            f"more than {most} occurrences in the horizon: only the first {most} are"
            f" materialised{why}",
        )
        return found[:most], [too_many], found[most].start
    notes = [] if found else [Skipped(key, NOTHING_DUE)]
    next_start = _next_start(
        schedule, zone=zone, anchor=anchor, after=horizon_end, policy=policy, budget=budget
    )
    return found, notes, next_start


def _next_start(
    schedule: ActivitySchedule,
    *,
    zone: ZoneInfo,
    anchor: datetime,
    after: datetime,
    policy: SchedulePolicy,
    budget: Budget,
) -> datetime:
    """When the activity next falls due from `after` on (or `after` + LOOKAHEAD: not before)."""
    try:
        found = _occurrences(schedule, zone, anchor, after, after + LOOKAHEAD, policy, 1, budget)
    except Unschedulable:  # not readable that far ahead: plan it again at the next sweep
        return after
    return found[0].start if found else after + LOOKAHEAD


def _occurrences(
    schedule: ActivitySchedule,
    zone: ZoneInfo,
    anchor: datetime,
    start: datetime,
    end: datetime,
    policy: SchedulePolicy,
    limit: int,
    budget: Budget,
) -> list[Occurrence]:
    """The schedule's occurrences in [start, end), within its own `not_before` and `until`."""
    if schedule.not_before is not None:
        start = max(start, schedule.not_before)
    if schedule.until is not None:
        end = min(end, schedule.until)
    if end <= start:
        return []
    return occurrences(
        schedule.timing,
        zone=zone,
        anchor=schedule.starts or anchor,
        window_start=start,
        window_end=end,
        when=policy.when,
        limit=limit,
        budget=budget,
    )


def not_scheduled(careplan: Mapping[str, Any] | None, tag: PlanTag | None) -> str | None:
    if careplan is None:
        return "the CarePlan was deleted"
    status, intent = careplan.get("status"), careplan.get("intent")
    if status != "active":
        return f"status is {status!r}: only active CarePlans are scheduled"
    if intent not in SCHEDULED_INTENTS:
        return f"intent is {intent!r}: only plans and orders are scheduled, not proposals"
    if tag is not None and not _has_tag(careplan, tag):
        wanted = f"{tag.system}|{tag.code}" if tag.system else tag.code
        return f"not tagged {wanted}: this server schedules only CarePlans with that meta.tag"
    if not isinstance((careplan.get("subject") or {}).get("reference"), str):
        return "the CarePlan's subject is not a reference Herald can write Tasks for"
    return None


def _has_tag(careplan: Mapping[str, Any], tag: PlanTag) -> bool:
    return any(
        isinstance(coding, dict)
        and coding.get("code") == tag.code
        and (tag.system is None or coding.get("system") == tag.system)
        for coding in (careplan.get("meta") or {}).get("tag") or ()
    )


def anchor_of(careplan: Mapping[str, Any], zone: ZoneInfo) -> datetime | None:
    for text in ((careplan.get("period") or {}).get("start"), careplan.get("created")):
        if isinstance(text, str):
            try:
                moment = date_time(text, "CarePlan.period.start")
            except Unschedulable:
                continue
            return moment.instant or to_utc(midnight(moment.first), zone)
    return None


def _activity_key(activity: Any, index: int) -> str:
    element_id = activity.get("id") if isinstance(activity, dict) else None
    if isinstance(element_id, str) and ID_PATTERN.match(element_id):
        return element_id
    return f"#{index}"  # an element id cannot contain '#': no clash with one


def _activity_not_scheduled(activity: Any, detail: Any) -> str | None:
    """Why an activity is not scheduled, as far as its own elements tell (one with no detail is
    judged by what it refers to: scheduler/activity.py)."""
    if not isinstance(activity, dict):
        return "the activity is not a JSON object"
    if not isinstance(detail, dict):
        return None
    status = detail.get("status")
    if status in ENDED_ACTIVITY:
        return f"detail.status is {status!r}: nothing to schedule"
    if detail.get("doNotPerform") is True:
        return "detail.doNotPerform is true: the activity is not to be done"
    return None


def _planned(
    careplan_id: str,
    careplan: Mapping[str, Any],
    schedule: ActivitySchedule,
    occurrence: Occurrence,
    zone: ZoneInfo,
) -> PlannedTask:
    key = schedule.key
    identifier = occurrence_key(careplan_id, key, occurrence.start)

    def content() -> dict[str, Any]:
        period = {"start": local_datetime(occurrence.start, zone)}
        if occurrence.end is not None:
            period["end"] = local_datetime(occurrence.end, zone)
        built: dict[str, Any] = {
            "identifier": [{"system": OCCURRENCE_SYSTEM, "value": identifier}],
            "basedOn": [{"reference": f"CarePlan/{careplan_id}"}],
            "for": careplan["subject"],
            "description": schedule.description,
            "executionPeriod": period,
        }
        if schedule.code is not None:
            built["code"] = schedule.code
        if schedule.focus is not None:
            built["focus"] = schedule.focus
        if schedule.inputs:
            built["input"] = list(schedule.inputs)
        return built

    return PlannedTask(
        task_id(careplan_id, identifier), careplan_id, key, occurrence.start, identifier, content
    )
