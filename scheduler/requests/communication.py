"""CommunicationRequest: a message to give the patient at `occurrenceDateTime` or
`occurrencePeriod` (R4B has no occurrenceTiming for it: scheduler/requests/occurrence.py).
Each Task's description is the message: the payloads' `contentString`, else the `category`.

Scheduled: active and not `doNotPerform` (R4B's CommunicationRequest has no intent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.requests.occurrence import occurrence_schedule
from scheduler.requests.schedule import ActivitySchedule, RequestContext
from scheduler.requests.status import check_scheduled
from scheduler.requests.values import concept_text, text

FORMS = ("occurrenceDateTime", "occurrencePeriod")


def communication_schedules(
    request: Mapping[str, Any], context: RequestContext
) -> list[ActivitySchedule]:
    check_scheduled(request, context.target, has_intent=False)
    return [
        occurrence_schedule(
            request, context, forms=FORMS, description=_message(request) or "Message"
        )
    ]


def _message(request: Mapping[str, Any]) -> str | None:
    contents = [
        found
        for payload in request.get("payload") or ()
        if isinstance(payload, Mapping) and (found := text(payload.get("contentString")))
    ]
    if contents:
        return " ".join(contents)
    categories = (concept_text(c) for c in request.get("category") or ())
    return next((c for c in categories if c), None)
