"""DeviceRequest: a device the patient is to use, when `occurrence[x]` says (Timing, dateTime
or Period in R4B: scheduler/requests/occurrence.py). Each Task carries the device's code
(`codeCodeableConcept`) and names it (that code, or `codeReference.display`).

Scheduled: an active order or plan (scheduler/requests/status.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.requests.occurrence import OCCURRENCE, occurrence_schedule
from scheduler.requests.schedule import ActivitySchedule, RequestContext
from scheduler.requests.status import check_scheduled
from scheduler.requests.values import concept_text, reference_display


def device_schedules(request: Mapping[str, Any], context: RequestContext) -> list[ActivitySchedule]:
    check_scheduled(request, context.target)
    code = request.get("codeCodeableConcept")
    device = concept_text(code) or reference_display(request.get("codeReference"))
    return [
        occurrence_schedule(
            request,
            context,
            forms=OCCURRENCE,
            description=f"Use {device}" if device else "Use the requested device",
            code=code if isinstance(code, Mapping) else None,
        )
    ]
