"""What the CapabilityStatement says about scheduling: `CarePlan/{id}/$schedule` (Herald's
own) and `PlanDefinition/$apply` (R4B's, instance and type level, docs/enrolment.md)."""

from __future__ import annotations

from typing import Any

from fhirstore.wire import APPLY_OPERATION, SCHEDULE_OPERATION

OPERATIONS = {
    "CarePlan": ("schedule", SCHEDULE_OPERATION),
    "PlanDefinition": ("apply", APPLY_OPERATION),
}


def schedule_capabilities(statement: dict[str, Any]) -> None:
    """An addition for `fhir_router`: lists the scheduler's operations on their types."""
    for rest in statement.get("rest", []):
        for resource in rest.get("resource", []):
            operation = OPERATIONS.get(resource.get("type"))
            if operation is not None:
                name, definition = operation
                resource.setdefault("operation", []).append(
                    {"name": name, "definition": definition}
                )
