"""What one CarePlan activity is scheduled from: its own `detail`, or the request its
`reference` points at (scheduler/requests/), as `ActivitySchedule`s the planner expands.

`referenced` lists the requests a CarePlan's activities point at, so the reconciler reads them
together with the CarePlan (and a change to one of them reschedules the CarePlans that point
at it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.questionnaire import questionnaire_input, questionnaire_of, task_code
from scheduler.requests import (
    READERS,
    ActivitySchedule,
    NotScheduled,
    PartNotScheduled,
    RequestContext,
    request_schedules,
)

# A reference to a request in this server: Type/id, also absolute or with a version.
_REQUEST_REFERENCE = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$"
)

# Read by the planner: a Mapping of "Type/id" to the request's current body (None: not stored,
# or deleted).
Requests = Mapping[str, Mapping[str, Any] | None]


def reference_target(activity: Any) -> str | None:
    """`Type/id` of the request `activity.reference` points at, when it is a type Herald
    reads (scheduler/requests), else None."""
    reference = activity.get("reference") if isinstance(activity, Mapping) else None
    text = reference.get("reference") if isinstance(reference, Mapping) else None
    found = _REQUEST_REFERENCE.search(text) if isinstance(text, str) else None
    if found is None or found.group(1) not in READERS:
        return None
    return f"{found.group(1)}/{found.group(2)}"


def referenced(careplan: Mapping[str, Any] | None) -> list[str]:
    """`Type/id` of each request the CarePlan's activities point at, once each, sorted."""
    activities = (careplan or {}).get("activity") or ()
    return sorted({t for a in activities if (t := reference_target(a)) is not None})


def activity_schedules(
    key: str,
    activity: Mapping[str, Any],
    *,
    requests: Requests,
    patient: str | None,
    zone: ZoneInfo,
    appointment_lead: timedelta,
) -> Sequence[ActivitySchedule | PartNotScheduled]:
    """The schedules of an activity to be scheduled, and the parts of the request it refers to
    that give none. Raises NotScheduled."""
    detail = activity.get("detail")
    if isinstance(detail, Mapping):
        return [detail_schedule(key, detail)]
    target = reference_target(activity)
    if target is None:
        reference = (activity.get("reference") or {}).get("reference")
        where = f" (it refers to {reference})" if isinstance(reference, str) else ""
        raise NotScheduled(
            f"the activity has no detail{where}: Herald materialises the schedule in"
            " activity.detail (scheduledTiming, scheduledPeriod) or in the request it refers"
            f" to ({', '.join(sorted(READERS))})"
        )
    context = RequestContext(key, activity["reference"], target, patient, zone, appointment_lead)
    return request_schedules(requests.get(target), context)


def detail_schedule(key: str, detail: Mapping[str, Any]) -> ActivitySchedule:
    """The schedule of an activity written inline; one that names a Questionnaire makes SDC
    questionnaire Tasks (scheduler/questionnaire.py). Raises NotScheduled."""
    code = detail.get("code")
    canonical = questionnaire_of(detail)
    if canonical is None:
        return ActivitySchedule(
            key=key,
            timing=detail,
            description=_description(detail, "CarePlan activity"),
            code=code if isinstance(code, Mapping) else None,
        )
    return ActivitySchedule(
        key=key,
        timing=detail,
        description=_description(detail, f"Complete questionnaire {canonical}"),
        code=task_code(),
        inputs=(questionnaire_input(canonical),),
    )


def _description(detail: Mapping[str, Any], otherwise: str) -> str:
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
    return otherwise
