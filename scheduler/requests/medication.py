"""MedicationRequest: each `dosageInstruction[].timing` is a schedule of intake reminders.

Scheduled: `status` active, `intent` order or plan (docs/scheduling.md). Each dosage
instruction with a timing is one schedule; the first is keyed by the activity, the others by
the activity and their index (`{key}/{i}`), so each dose has Tasks of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.requests.schedule import ActivitySchedule, NotScheduled, RequestContext

SCHEDULED_STATUS = "active"
SCHEDULED_INTENTS = frozenset({"order", "plan"})


def medication_schedules(
    request: Mapping[str, Any], context: RequestContext
) -> list[ActivitySchedule]:
    target = context.target
    status, intent = request.get("status"), request.get("intent")
    if status != SCHEDULED_STATUS:
        raise NotScheduled(f"{target} has status {status!r}: only active requests are scheduled")
    if intent not in SCHEDULED_INTENTS:
        raise NotScheduled(f"{target} has intent {intent!r}: only orders and plans are scheduled")
    schedules: list[ActivitySchedule] = []
    for index, dosage in enumerate(request.get("dosageInstruction") or ()):
        if not isinstance(dosage, Mapping) or not isinstance(dosage.get("timing"), Mapping):
            continue
        schedules.append(
            ActivitySchedule(
                key=context.key if index == 0 else f"{context.key}/{index}",
                timing={"scheduledTiming": dosage["timing"]},
                description=_description(request, dosage),
                source=f"{target} dosageInstruction[{index}].timing",
                focus=context.reference,
            )
        )
    if not schedules:
        raise NotScheduled(f"{target} has no dosageInstruction with a timing to schedule")
    return schedules


def _description(request: Mapping[str, Any], dosage: Mapping[str, Any]) -> str:
    concept = request.get("medicationCodeableConcept")
    medication = concept.get("text") if isinstance(concept, Mapping) else None
    text = dosage.get("text")
    parts = [p for p in (medication, text) if isinstance(p, str) and p.strip()]
    return ": ".join(parts) if parts else "Take medication"
