"""Trying a new SubscriptionTopic's fhirPathCriteria before it is stored.

Each trigger's expression is evaluated, under the budget, on sample versions of the trigger's
resource type, as the matcher would see them for each interaction the trigger supports
(`%previous` and `%current`): a minimal instance (type and id only) and a filled one (every
element of the type, and of its data types two levels down, with one plausible value). One that
fails, or spends its budget, is refused with 422 naming the element and the problem, and nothing
is stored. Passing the trial is no promise for every resource: at match time the budget still
applies (see `missed_by_budget.py`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhirpathpy.models import models

from subscriptions.elements import invalid
from subscriptions.fhirpath_budget import (
    FhirPathError,
    FhirPathOverBudget,
    FhirPathRunner,
    compile_client_fhirpath,
)
from subscriptions.metrics import FHIRPATH_OVER_BUDGET
from subscriptions.model import ANY_RESOURCE, ResourceTrigger, Topic

_PATH_TYPES: dict[str, str] = models["r4"]["path2Type"]
_DEPTH = 3  # resource elements, their data types, and those data types' elements
_ANY_RESOURCE_SAMPLES = ("Patient", "Observation")
_VALUES: dict[str, Any] = {
    "boolean": True,
    "integer": 1,
    "positiveInt": 1,
    "unsignedInt": 1,
    "integer64": 1,
    "decimal": 1.5,
    "date": "2024-01-01",
    "dateTime": "2024-01-01T09:00:00Z",
    "instant": "2024-01-01T09:00:00Z",
    "time": "09:00:00",
    "uri": "http://example.org/sample",
    "url": "http://example.org/sample",
    "canonical": "http://example.org/sample",
    "oid": "urn:oid:1.2.3",
    "uuid": "urn:uuid:00000000-0000-4000-8000-000000000000",
    "base64Binary": "c2FtcGxl",
    "xhtml": '<div xmlns="http://www.w3.org/1999/xhtml">sample</div>',
}
_SKIPPED = frozenset({"extension", "modifierExtension", "contained"})
# `deceased[x]` is filled in as its first type only (`deceasedBoolean`), as a resource would be.
_LATER_CHOICES = frozenset(
    f"{base}{kind}" for base, kinds in models["r4"]["choiceTypePaths"].items() for kind in kinds[1:]
)


@lru_cache(maxsize=1)
def _elements() -> dict[str, list[tuple[str, str]]]:
    """Path -> its elements' (name, type), from the model (one pass, on first use)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for key, kind in _PATH_TYPES.items():
        parent, _, name = key.rpartition(".")
        found.setdefault(parent, []).append((name, kind))
    return found


def _children(path: str) -> list[tuple[str, str]]:
    return _elements().get(path, [])


def _value(path: str, kind: str, depth: int) -> Any:
    if kind in _VALUES:
        return _VALUES[kind]
    if kind[:1].islower() or kind.startswith("System."):
        return "sample"  # string, code, id, markdown, System.String
    if depth >= _DEPTH or kind in ("Resource", "Extension"):
        return None
    # A data type (HumanName) or a backbone element (Patient.contact) by its own path.
    own = path if kind in ("BackboneElement", "Element") else kind
    element = _filled(own, depth + 1)
    if kind == "Reference":
        element["reference"] = "Patient/sample"
    return [element] if element else None


def _filled(path: str, depth: int) -> dict[str, Any]:
    filled: dict[str, Any] = {}
    for name, kind in _children(path):
        if name in _SKIPPED or f"{path}.{name}" in _LATER_CHOICES:
            continue
        value = _value(f"{path}.{name}", kind, depth)
        if value is not None:
            filled[name] = value
    return filled


@lru_cache(maxsize=256)
def _filled_sample(resource_type: str) -> dict[str, Any]:
    return {**_filled(resource_type, 1), "resourceType": resource_type, "id": "sample"}


def samples(resource_type: str) -> list[tuple[str, dict[str, Any]]]:
    """(description, resource) pairs to try an expression on."""
    types = _ANY_RESOURCE_SAMPLES if resource_type == ANY_RESOURCE else (resource_type,)
    found = []
    for name in types:
        found.append((f"a minimal {name}", {"resourceType": name, "id": "sample"}))
        found.append((f"a filled-in {name}", _filled_sample(name)))
    return found


def _cases(trigger: ResourceTrigger) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(description, focus, variables) as the matcher would evaluate the trigger."""
    cases = []
    for described, sample in samples(trigger.resource_type):
        versions = {
            "create": ([], sample),
            "update": (sample, sample),
            "delete": (sample, []),
        }
        for interaction, (previous, current) in versions.items():
            if interaction in trigger.interactions:
                variables = {"previous": previous, "current": current}
                cases.append((f"{interaction} of {described}", sample, variables))
    return cases


async def try_topic_criteria(topic: Topic, runner: FhirPathRunner) -> None:
    """Raise Unprocessable (naming the element) for the first fhirPathCriteria that fails or
    spends its budget on a sample."""
    for index, trigger in enumerate(topic.triggers):
        if trigger.fhirpath is None:
            continue
        path = f"SubscriptionTopic.resourceTrigger[{index}].fhirPathCriteria"
        compiled = compile_client_fhirpath(trigger.fhirpath)
        for described, focus, variables in _cases(trigger):
            try:
                await runner.evaluate(compiled, focus, variables)
            except FhirPathOverBudget as error:
                FHIRPATH_OVER_BUDGET.labels("create", error.limit).inc()
                raise invalid(
                    path, f"{error} on the {described}; simplify the expression"
                ) from None
            except FhirPathError as error:
                raise invalid(path, f"{error} on the {described}") from None
