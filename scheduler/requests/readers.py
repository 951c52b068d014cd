"""`request_schedules`: the schedules of the request an activity refers to, by its type.

Rules every type shares, checked here before its reader runs: the request must exist (a missing
or deleted one is reported), and be for the CarePlan's patient (`subject`, or for an Appointment
a participant's actor): a request for someone else is never scheduled for this patient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scheduler.requests.appointment import appointment_schedules
from scheduler.requests.communication import communication_schedules
from scheduler.requests.device import device_schedules
from scheduler.requests.medication import medication_schedules
from scheduler.requests.schedule import (
    ActivitySchedule,
    NotScheduled,
    PartNotScheduled,
    RequestContext,
)
from scheduler.requests.service import service_schedules
from scheduler.requests.subject import patients_of

Reader = Callable[
    [Mapping[str, Any], RequestContext], Sequence[ActivitySchedule | PartNotScheduled]
]

READERS: dict[str, Reader] = {
    "Appointment": appointment_schedules,
    "CommunicationRequest": communication_schedules,
    "DeviceRequest": device_schedules,
    "MedicationRequest": medication_schedules,
    "ServiceRequest": service_schedules,
}


def request_schedules(
    request: Mapping[str, Any] | None, context: RequestContext
) -> Sequence[ActivitySchedule | PartNotScheduled]:
    """The schedules of `request` (None: not stored, or deleted). Raises NotScheduled."""
    target = context.target
    if request is None:
        raise NotScheduled(f"the activity refers to {target}, which is not stored (or deleted)")
    reader = READERS.get(target.partition("/")[0])
    if reader is None:
        raise NotScheduled(
            f"the activity refers to {target}: Herald schedules the requests an activity refers"
            f" to when they are one of {', '.join(sorted(READERS))}"
        )
    patients = patients_of(request)
    if context.patient not in patients:
        found = ", ".join(sorted(patients)) or "no patient"
        raise NotScheduled(
            f"{target} is for {found}, not the CarePlan's {context.patient}: a request is"
            " scheduled only for its own patient"
        )
    return reader(request, context)
