"""From a CarePlan to the Tasks its schedule wants now (pure: no I/O, no clock of its own).

Which CarePlans are scheduled: `status = active` with `intent` plan or order (a proposal or an
option is not yet agreed care, so it gets no Tasks), carrying the configured meta tag when the
policy names one. Which activities: those with a `detail` whose status is not cancelled, stopped,
completed, entered-in-error or on-hold, and which is not `doNotPerform`. Everything left out is
reported with a reason a person can act on.

A plan keeps to the limits (`ScheduleLimits`, docs/limits.md): activities beyond the first so
many are reported, and a plan with more Tasks than a CarePlan may have keeps its earliest ones
(`limited`; the reconciler uses the same for the patient's limit), reporting the rest.

A plan also says until when its Tasks cover the schedule (`covered_until`): the start of the
first occurrence it leaves out. Until the horizon reaches that instant, the same CarePlan under
the same policy wants no Task the plan does not have, so a sweep can leave it alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhirstore.validation import ID_PATTERN
from fhirstore.wire import OCCURRENCE_SYSTEM
from scheduler.policy import TIMEZONE_EXTENSION, PlanTag, ScheduleLimits, SchedulePolicy
from scheduler.task import PlannedTask, local_datetime, occurrence_key, task_id
from scheduler.timing import Budget, Occurrence, Unschedulable, occurrences
from scheduler.timing.primitives import date_time
from scheduler.timing.wallclock import midnight, to_utc

SCHEDULED_INTENTS = frozenset({"plan", "order"})
ENDED_ACTIVITY = frozenset({"cancelled", "stopped", "completed", "entered-in-error", "on-hold"})
# Patient/{id}, also absolute or with a version: https://.../Patient/{id}/_history/2
_PATIENT_REF = re.compile(r"(?:^|/)(Patient/[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$")
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


def patient_of(careplan: Mapping[str, Any] | None) -> str | None:
    reference = ((careplan or {}).get("subject") or {}).get("reference")
    found = _PATIENT_REF.search(reference) if isinstance(reference, str) else None
    return found.group(1) if found else None


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
) -> Plan:
    """The Tasks `careplan` (None: deleted) wants for occurrences in [now - grace, now +
    horizon): those not yet missed, up to the horizon. `first_seen` anchors a schedule that
    starts nowhere else (no bounds, no period.start, no created)."""
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
    for key, activity, detail, reason in activities(careplan, limits.activities):
        if reason is not None:
            skipped.append(Skipped(key, reason))
            continue
        assert detail is not None
        try:
            found, notes, next_start = _window(detail, key, zone, anchor, now, policy, budget)
        except Unschedulable as error:
            skipped.append(Skipped(key, error.reason))
            continue
        skipped.extend(notes)
        covered.append(next_start)
        for occurrence in found:
            planned = _planned(careplan_id, careplan, key, activity, detail, occurrence, zone)
            tasks[planned.id] = planned
    if not careplan.get("activity"):
        skipped.append(Skipped(None, "the CarePlan has no activity to schedule"))
    plan = Plan(careplan_id, patient, zone.key, True, tasks, tuple(skipped), min(covered))
    return limited(plan, limits.tasks_per_careplan, careplan_tasks_limit(limits))


def activities(
    careplan: Mapping[str, Any], most: int
) -> Iterator[tuple[str, Any, dict[str, Any] | None, str | None]]:
    """Each activity of a scheduled CarePlan: its key, the activity, and its detail when it is
    to be scheduled, else (detail None) the reason it is not. Only the first `most` are
    scheduled (HERALD_LIMIT_CAREPLAN_ACTIVITIES)."""
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
        yield key, activity, (detail if not_scheduled is None else None), not_scheduled


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
    detail: Mapping[str, Any],
    key: str,
    zone: ZoneInfo,
    anchor: datetime,
    now: datetime,
    policy: SchedulePolicy,
    budget: Budget,
) -> tuple[list[Occurrence], list[Skipped], datetime]:
    """The activity's occurrences to materialise at `now`, what to report about them, and
    where the first one left out starts. Raises Unschedulable."""
    horizon_end = now + policy.horizon
    # One activity never brings more than its CarePlan may have: no need to expand them.
    most = min(MAX_TASKS_PER_ACTIVITY, policy.limits.tasks_per_careplan)
    found = occurrences(
        detail,
        zone=zone,
        anchor=anchor,
        window_start=now - policy.grace,
        window_end=horizon_end,
        when=policy.when,
        limit=most + 1,
        budget=budget,
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
        detail, zone=zone, anchor=anchor, after=horizon_end, policy=policy, budget=budget
    )
    return found, notes, next_start


def _next_start(
    detail: Mapping[str, Any],
    *,
    zone: ZoneInfo,
    anchor: datetime,
    after: datetime,
    policy: SchedulePolicy,
    budget: Budget,
) -> datetime:
    """When the activity next falls due from `after` on (or `after` + LOOKAHEAD: not before)."""
    try:
        found = occurrences(
            detail,
            zone=zone,
            anchor=anchor,
            window_start=after,
            window_end=after + LOOKAHEAD,
            when=policy.when,
            limit=1,
            budget=budget,
        )
    except Unschedulable:  # not readable that far ahead: plan it again at the next sweep
        return after
    return found[0].start if found else after + LOOKAHEAD


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
    if not isinstance(detail, dict):
        target = activity.get("reference") if isinstance(activity, dict) else None
        reference = target.get("reference") if isinstance(target, dict) else None
        where = f" (it refers to {reference})" if isinstance(reference, str) else ""
        return (
            f"the activity has no detail{where}: Herald materialises the schedule in "
            f"activity.detail (scheduledTiming, scheduledPeriod)"
        )
    status = detail.get("status")
    if status in ENDED_ACTIVITY:
        return f"detail.status is {status!r}: nothing to schedule"
    if detail.get("doNotPerform") is True:
        return "detail.doNotPerform is true: the activity is not to be done"
    return None


def _planned(
    careplan_id: str,
    careplan: Mapping[str, Any],
    key: str,
    activity: Mapping[str, Any],
    detail: Mapping[str, Any],
    occurrence: Any,
    zone: ZoneInfo,
) -> PlannedTask:
    identifier = occurrence_key(careplan_id, key, occurrence.start)

    def content() -> dict[str, Any]:
        period = {"start": local_datetime(occurrence.start, zone)}
        if occurrence.end is not None:
            period["end"] = local_datetime(occurrence.end, zone)
        built: dict[str, Any] = {
            "identifier": [{"system": OCCURRENCE_SYSTEM, "value": identifier}],
            "basedOn": [{"reference": f"CarePlan/{careplan_id}"}],
            "for": careplan["subject"],
            "description": _description(detail),
            "executionPeriod": period,
        }
        if isinstance(detail.get("code"), dict):
            built["code"] = detail["code"]
        if isinstance(activity.get("reference"), dict):
            built["focus"] = activity["reference"]
        return built

    return PlannedTask(
        task_id(careplan_id, identifier), careplan_id, key, occurrence.start, identifier, content
    )


def _description(detail: Mapping[str, Any]) -> str:
    if isinstance(detail.get("description"), str) and detail["description"].strip():
        return str(detail["description"])
    code = detail.get("code")
    if not isinstance(code, dict):
        code = {}
    if isinstance(code.get("text"), str):
        return str(code["text"])
    for coding in code.get("coding") or ():
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            return str(coding["display"])
    return "CarePlan activity"
