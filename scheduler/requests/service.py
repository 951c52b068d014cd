"""ServiceRequest: a procedure, test or therapy the patient is to have, when `occurrence[x]`
says (scheduler/requests/occurrence.py): each occurrence is a Task carrying the request's
`code` and a description from that code and the `patientInstruction`.

Scheduled: an active order or plan to be performed (scheduler/requests/status.py), and not
`asNeeded` (a service to be done when needed has no time to remind of).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.requests.occurrence import OCCURRENCE, occurrence_schedule
from scheduler.requests.schedule import ActivitySchedule, NotScheduled, RequestContext
from scheduler.requests.status import check_scheduled
from scheduler.requests.values import concept_text, text


def service_schedules(
    request: Mapping[str, Any], context: RequestContext
) -> list[ActivitySchedule]:
    check_scheduled(request, context.target)
    if request.get("asNeededBoolean") is True or request.get("asNeededCodeableConcept"):
        raise NotScheduled(
            f"{context.target} is to be done as needed (asNeeded): Herald reminds of scheduled"
            " services only"
        )
    code = request.get("code")
    what = concept_text(code) or "Requested service"
    how = text(request.get("patientInstruction"))
    return [
        occurrence_schedule(
            request,
            context,
            forms=OCCURRENCE,
            description=f"{what}: {how}" if how else what,
            code=code if isinstance(code, Mapping) else None,
        )
    ]
