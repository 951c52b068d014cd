"""One PlanDefinition action as a CarePlan activity: its `detail` from the action and the
definition its `definitionCanonical` names (an ActivityDefinition: kind, code, product,
quantity, location, dosage; a Questionnaire: `instantiatesCanonical` and SDC's
`complete-questionnaire` code, which make its Tasks questionnaire Tasks), scheduled by the
first placing and the first repeating timing of the action, the definition and its dosage
(scheduler/enrolment/timing.py).

What cannot be carried over (a product or Questionnaire contained in the definition, a kind a
CarePlan activity cannot name, a timing given by an expression, a dosage taken as needed,
elements Herald does not act on) is noted, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.enrolment.actions import FlatAction, Note
from scheduler.enrolment.timing import (
    PLACING,
    REPEATING,
    Frame,
    Resolved,
    Unresolved,
    period_at,
    resolve,
    timing_choice,
)
from scheduler.questionnaire import task_code


@dataclass(frozen=True, slots=True)
class Activity:
    """A CarePlan activity, and when it starts and ends (UTC) for actions related to it."""

    body: dict[str, Any]
    window: tuple[datetime, datetime | None]


# A definition by canonical as read from the store: an ActivityDefinition or a Questionnaire
# (None: not found, or outside what the caller may read).
Definitions = Mapping[str, Mapping[str, Any] | None]
CQF_EXPRESSION = "http://hl7.org/fhir/StructureDefinition/cqf-expression"
# CarePlan.activity.detail.kind (R4B care-plan-activity-kind).
CAREPLAN_KINDS = frozenset(
    {
        "Appointment",
        "CommunicationRequest",
        "DeviceRequest",
        "MedicationRequest",
        "NutritionOrder",
        "Task",
        "ServiceRequest",
        "VisionPrescription",
    }
)
# ActivityDefinition elements that would change what is done, which enrolment does not act on.
IGNORED_DEFINITION = {
    "participant": "participants are not assigned",
    "transform": "transforms are not run",
    "specimenRequirement": "specimen requirements are not copied",
    "observationRequirement": "observation requirements are not copied",
    "observationResultRequirement": "observation result requirements are not copied",
}


def definition_of(
    action: Mapping[str, Any], contained: Mapping[str, Any], definitions: Definitions
) -> tuple[str, Mapping[str, Any] | None] | None:
    """The action's definitionCanonical and what it names (None: it names nothing here)."""
    canonical = action.get("definitionCanonical")
    if not isinstance(canonical, str):
        return None
    if canonical.startswith("#"):
        return canonical, contained.get(canonical[1:])
    return canonical, definitions.get(canonical)


def activity_of(
    action: FlatAction,
    definition: tuple[str, Mapping[str, Any] | None] | None,
    base: datetime,
    frame: Frame,
    notes: list[Note],
) -> Activity | None:
    """The action's activity, or None (left out, noted)."""
    detail: dict[str, Any] = {}
    found: Mapping[str, Any] = {}
    if action.action.get("definitionUri"):
        notes.append(Note(action.where, "definitionUri is not followed (only definitionCanonical)"))
    if definition is not None:
        canonical, body = definition
        kind = (body or {}).get("resourceType")
        if kind == "ActivityDefinition":
            assert body is not None
            found = body
            detail.update(_from_activity_definition(body, action.where, notes))
            if not canonical.startswith("#"):  # a contained one has no canonical of its own
                detail["instantiatesCanonical"] = [canonical]
        elif kind == "Questionnaire" or (body is None and "/Questionnaire/" in canonical):
            # Coded to complete a questionnaire, so that its Tasks are questionnaire Tasks
            # whatever the Questionnaire's url looks like (scheduler/questionnaire.py).
            detail.update(kind="Task", code=task_code())
            if canonical.startswith("#"):
                notes.append(
                    Note(
                        action.where,
                        f"the Questionnaire {canonical} is contained in the PlanDefinition, so"
                        " the CarePlan cannot name it: give it a url of its own",
                    )
                )
            else:
                detail["instantiatesCanonical"] = [canonical]
            title = (body or {}).get("title")
            if isinstance(title, str):
                detail["description"] = title
        else:
            what = (
                f"a {kind}, which enrolment does not apply (only ActivityDefinitions and"
                " Questionnaires)"
                if kind
                else "nothing this server holds (or this token may read)"
            )
            notes.append(
                Note(action.where, f"definitionCanonical {canonical} names {what}; left out")
            )
            return None
    description = _text(action.action) or detail.get("description") or _text(found)
    if description is None and not detail and action.timing is None:
        notes.append(Note(action.where, "the action has no definition, text or timing; left out"))
        return None
    if description is not None:
        detail["description"] = description
    try:
        resolved = _schedule(action, found, base, frame, notes)
    except Unresolved as error:
        notes.append(Note(action.where, f"{error.reason}; left out"))
        return None
    detail["status"] = "scheduled" if resolved is not None else "not-started"
    if resolved is None:  # listed, as the plan has it, for the patient and their carers
        notes.append(
            Note(
                action.where,
                "neither the action nor its definition has a timing: the activity is listed"
                " without a schedule, so it gets no Task",
            )
        )
    if resolved is None:
        return Activity({"id": action.key, "detail": detail}, (base, None))
    detail.update(resolved.scheduled)
    return Activity({"id": action.key, "detail": detail}, (resolved.start, resolved.end))


def _schedule(
    action: FlatAction,
    definition: Mapping[str, Any],
    base: datetime,
    frame: Frame,
    notes: list[Note],
) -> Resolved | None:
    """The action's timing placed by the first non-Timing of the action's and the
    definition's timing[x], repeated by the first Timing of those and the dosage's."""
    choices = [action.timing, timing_choice(definition)]
    for dosage in definition.get("dosage") or ():
        if isinstance(dosage, Mapping) and isinstance(dosage.get("timing"), Mapping):
            if dosage.get("asNeededBoolean") is True or "asNeededCodeableConcept" in dosage:
                notes.append(Note(action.where, "its dosage is taken as needed: not scheduled"))
                break
            choices.append((REPEATING, dosage["timing"]))
    for name, value in (c for c in choices if c is not None):
        if _expression_in(value):
            raise Unresolved(
                f"{name} is given by an expression (cqf-expression), which Herald does not evaluate"
            )
    placing = next((c for c in choices if c is not None and c[0] in PLACING), None)
    repeats = [c[1] for c in choices if c is not None and c[0] == REPEATING]
    for name, _ in (c for c in choices if c is not None):
        if name not in PLACING and name != REPEATING:
            notes.append(Note(action.where, f"{name} is not a timing Herald reads; ignored"))
    repeating = repeats[0] if repeats and isinstance(repeats[0], Mapping) else None
    resolved = resolve(placing, repeating, base, frame)
    if resolved is None and action.action.get("relatedAction"):
        return period_at(base, None, frame.zone)  # when its related action says
    return resolved


def _expression_in(value: Any) -> bool:
    """Whether a value holds a cqf-expression extension (a computed value) anywhere."""
    if isinstance(value, Mapping):
        if value.get("url") == CQF_EXPRESSION:
            return True
        return any(_expression_in(v) for v in value.values())
    if isinstance(value, list):
        return any(_expression_in(v) for v in value)
    return False


def _from_activity_definition(
    definition: Mapping[str, Any], where: str, notes: list[Note]
) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    name = definition.get("url") or definition.get("id") or "the contained definition"
    kind = definition.get("kind")
    if kind in CAREPLAN_KINDS:
        detail["kind"] = kind
    elif kind is not None:
        notes.append(
            Note(
                where,
                f"ActivityDefinition {name} has kind {kind!r}, which a CarePlan activity"
                " cannot name; the activity has no kind",
            )
        )
    for element in ("code", "productCodeableConcept", "quantity"):
        if element in definition:
            detail[element] = definition[element]
    product = definition.get("productReference")
    if isinstance(product, Mapping):
        reference = product.get("reference")
        if isinstance(reference, str) and reference.startswith("#"):
            notes.append(
                Note(
                    where,
                    f"ActivityDefinition {name}: its product is contained in the definition,"
                    " which the CarePlan cannot refer to; the activity names it by description",
                )
            )
        else:
            detail["productReference"] = product
    if isinstance(definition.get("location"), Mapping):
        detail["location"] = definition["location"]
    if definition.get("doNotPerform") is True:
        detail["doNotPerform"] = True
    dosages = [d for d in definition.get("dosage") or () if isinstance(d, Mapping)]
    if len(dosages) > 1:
        notes.append(Note(where, f"ActivityDefinition {name}: only its first dosage is scheduled"))
    if dosages and isinstance(dosages[0].get("text"), str):
        detail["description"] = dosages[0]["text"]
    for element, why in IGNORED_DEFINITION.items():
        if definition.get(element):
            notes.append(Note(where, f"ActivityDefinition {name} {element}: {why}"))
    return detail


def _text(element: Mapping[str, Any]) -> str | None:
    for name in ("title", "description", "textEquivalent"):
        value = element.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None
