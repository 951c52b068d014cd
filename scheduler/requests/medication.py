"""MedicationRequest: each `dosageInstruction[].timing` is a schedule of intake reminders.

Scheduled: an active order or plan to be performed (scheduler/requests/status.py). Each dosage
instruction with a timing is one schedule; the first is keyed by the activity, the others by
the activity and their index (`{key}/{i}`), so each dose has Tasks of its own. A dosage taken as
needed (`asNeededBoolean` true, or an `asNeededCodeableConcept`) is not: its timing is how often
it may be taken, not when, and a reminder would push a dose nobody prescribed. Such a dosage, or
one without a timing, is reported under its key while the others are scheduled.

Read besides the timing: `authoredOn` (where a timing without bounds starts, and what
boundsDuration counts from), `dispenseRequest.validityPeriod` (no reminder outside the time the
prescription is in force; a date-only end includes that day), the medication's name
(`medicationCodeableConcept`, `medicationReference.display`, or the contained Medication it
points at), `patientInstruction` (else `text`) and the first `doseAndRate`'s dose, which each
Task carries as an input of type text `dose` (valueQuantity or valueRange).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.requests.schedule import (
    ActivitySchedule,
    NotScheduled,
    PartNotScheduled,
    RequestContext,
)
from scheduler.requests.status import check_scheduled
from scheduler.requests.values import authored_on, concept_text, period, reference_display, text

DOSE_TYPE = {"text": "dose"}  # Task.input.type of the dose each intake Task carries


def medication_schedules(
    request: Mapping[str, Any], context: RequestContext
) -> list[ActivitySchedule | PartNotScheduled]:
    target = context.target
    check_scheduled(request, target)
    dosages = request.get("dosageInstruction")
    if not isinstance(dosages, list) or not dosages:
        raise NotScheduled(f"{target} has no dosageInstruction: nothing says when to take it")
    validity = (request.get("dispenseRequest") or {}).get("validityPeriod")
    not_before, until = (
        period(validity, f"{target} dispenseRequest.validityPeriod", context.zone)
        if validity is not None
        else (None, None)
    )
    medication = medication_name(request)
    starts = authored_on(request, context.zone)
    found: list[ActivitySchedule | PartNotScheduled] = []
    for index, dosage in enumerate(dosages):
        key = context.key if index == 0 else f"{context.key}/{index}"
        where = f"{target} dosageInstruction[{index}]"
        why_not = _not_scheduled(dosage, where)
        if why_not is not None:
            found.append(PartNotScheduled(key, why_not))
            continue
        found.append(
            ActivitySchedule(
                key=key,
                timing={"scheduledTiming": dosage["timing"]},
                description=_description(medication, dosage),
                source=f"{where}.timing (read as scheduledTiming)",
                focus=context.reference,
                inputs=_dose(dosage),
                starts=starts,
                not_before=not_before,
                until=until,
            )
        )
    return found


def medication_name(request: Mapping[str, Any]) -> str:
    """The medication as a person reads it, from the request or the Medication it contains."""
    found = concept_text(request.get("medicationCodeableConcept"))
    reference = request.get("medicationReference")
    found = found or reference_display(reference)
    pointer = reference.get("reference") if isinstance(reference, Mapping) else None
    if found is None and isinstance(pointer, str) and pointer.startswith("#"):
        for contained in request.get("contained") or ():
            if isinstance(contained, Mapping) and contained.get("id") == pointer[1:]:
                found = concept_text(contained.get("code"))
    return found or "Medication"


def _not_scheduled(dosage: Any, where: str) -> str | None:
    if not isinstance(dosage, Mapping):
        return f"{where} is not a JSON object"
    if dosage.get("asNeededBoolean") is True or dosage.get("asNeededCodeableConcept"):
        return (
            f"{where} is taken as needed (asNeeded): Herald reminds of scheduled doses only,"
            " its timing says how often it may be taken"
        )
    if not isinstance(dosage.get("timing"), Mapping):
        return f"{where} has no timing: nothing says when to take it"
    return None


def _description(medication: str, dosage: Mapping[str, Any]) -> str:
    how = text(dosage.get("patientInstruction")) or text(dosage.get("text"))
    if how is None and (dose := _dose(dosage)):
        how = _dose_text(dose[0])
    return f"{medication}: {how}" if how else medication


def _dose(dosage: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    """The first doseAndRate's dose as a Task.input, when it gives one."""
    rates = dosage.get("doseAndRate")
    first = rates[0] if isinstance(rates, list) and rates else None
    if not isinstance(first, Mapping):
        return ()
    for element, value in (("doseQuantity", "valueQuantity"), ("doseRange", "valueRange")):
        if isinstance(first.get(element), Mapping):
            return ({"type": DOSE_TYPE, value: first[element]},)
    return ()


def _dose_text(dose: Mapping[str, Any]) -> str | None:
    def quantity(value: Any) -> str | None:
        if not isinstance(value, Mapping) or value.get("value") is None:
            return None
        unit = text(value.get("unit")) or text(value.get("code"))
        return f"{value['value']} {unit}" if unit else str(value["value"])

    if "valueQuantity" in dose:
        return quantity(dose["valueQuantity"])
    low, high = (quantity(dose["valueRange"].get(end)) for end in ("low", "high"))
    return f"{low} to {high}" if low and high else None
