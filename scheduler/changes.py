"""Which changes on `fhir.changes` concern the scheduler, decided from the events alone.

A batch of change events is sorted, without reading the database, into what the scheduler
looks up once for the whole batch (scheduler/service.py):

- a CarePlan: reconciled itself;
- a Patient: its CarePlans are (the time zone may have changed), except a Patient created
  (never stored before, or deleted) whose zone is the default one: its CarePlans were planned
  in the default zone (no live Patient: `plan.patient_zone`) and would be planned in it again.
  Those CarePlans were planned without this Patient, so the next sweep plans them again anyway
  (scheduler/settled.py point 2), with the same Tasks;
- a request of a type Herald schedules from (`scheduler.requests.READERS`): the CarePlans last
  planned from it are;
- anything else (the Tasks the scheduler writes among them): nothing, from its key alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from events.bus import Message
from scheduler.plan import patient_zone
from scheduler.requests import READERS


@dataclass(slots=True)
class Concerned:
    """What a batch of changes asks the scheduler to reconcile."""

    careplans: set[str] = field(default_factory=set)  # ids
    patients: set[str] = field(default_factory=set)  # "Patient/{id}": their CarePlans
    requests: set[str] = field(default_factory=set)  # "Type/id": the CarePlans planned from it


def concerned(messages: Sequence[Message], default_zone: ZoneInfo) -> Concerned:
    """Sort `messages` (change events) by what they ask the scheduler to reconcile."""
    found = Concerned()
    for message in messages:
        resource_type, _, resource_id = message.key.partition("/")
        if resource_type == "CarePlan":
            found.careplans.add(resource_id)
        elif resource_type == "Patient":
            if message.key not in found.patients and _may_move(message, default_zone):
                found.patients.add(message.key)
        elif resource_type in READERS:
            found.requests.add(message.key)
    return found


def _may_move(message: Message, default_zone: ZoneInfo) -> bool:
    """Whether this Patient change may move its CarePlans' Tasks: all but a creation in the
    default zone (an event that cannot be read is assumed to)."""
    try:
        event: Any = orjson.loads(message.value)
    except orjson.JSONDecodeError:
        return True
    if not isinstance(event, dict) or event.get("interaction") != "create":
        return True
    resource = event.get("resource")
    return not isinstance(resource, dict) or patient_zone(resource, default_zone) != default_zone
