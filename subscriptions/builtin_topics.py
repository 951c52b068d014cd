"""The SubscriptionTopics Herald offers out of the box, as R4B resources with fixed ids.

- `resource-change`: any create, update or delete of any resource; filter by `_type` and by any
  search parameter of the focus type (`filterParameter` `*`, see `topics.py`), with any
  modifier and prefix Herald supports (no `canFilterBy.modifier`).
- `task-ready`: a Task is created `ready` or changes to `ready` (a reminder fell due).
- `encounter-start`: an Encounter is created `in-progress` or changes to `in-progress` (the
  Backport IG's admission example).

On the two state-change topics, reference parameters allow `=` (a reference, `:Type`, or a
chain such as `patient.identifier=`) and token parameters `=`, `ne` (`:not`), `in`, `not-in`,
`above` and `below` (`canFilterBy.modifier`, see `operators.py`): what an app narrowing a
stream to its patients or kinds of Task needs, and nothing that tests for absence.

The state-change topics use the IG's pattern: previous `status:not=X`, current `status=X`,
create counts as "previous passes", delete as "current fails", and both must hold, so a
resource that stays in X does not notify again.
"""

from __future__ import annotations

from typing import Any

from fhirstore.wire import TOPIC_BASE

_DEFINITION = "http://hl7.org/fhir/StructureDefinition/"
_DATE = "2025-01-01"


def _topic(topic_id: str, title: str, description: str, **content: Any) -> dict[str, Any]:
    return {
        "resourceType": "SubscriptionTopic",
        "id": topic_id,
        "url": TOPIC_BASE + topic_id,
        "version": "1.0.0",
        "title": title,
        "status": "active",
        "date": _DATE,
        "publisher": "Herald",
        "description": description,
        **content,
    }


REFERENCE_MODIFIERS = ("=",)
TOKEN_MODIFIERS = ("=", "ne", "above", "below", "in", "not-in")


def _filters(
    resource_type: str, descriptions: dict[str, tuple[str, tuple[str, ...]]]
) -> list[dict[str, Any]]:
    return [
        {
            "resource": resource_type,
            "filterParameter": name,
            "description": text,
            "modifier": list(modifiers),
        }
        for name, (text, modifiers) in descriptions.items()
    ]


def _status_change(resource_type: str, status: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "resource": _DEFINITION + resource_type,
        "supportedInteraction": ["create", "update"],
        "queryCriteria": {
            "previous": f"status:not={status}",
            "resultForCreate": "test-passes",
            "current": f"status={status}",
            "resultForDelete": "test-fails",
            "requireBoth": True,
        },
    }


RESOURCE_CHANGE_TOPIC: dict[str, Any] = _topic(
    "resource-change",
    "Any resource change",
    "Every create, update and delete of any resource. Narrow it with `_type` and with any"
    " search parameter of the resource type (`Observation?patient=Patient/123`).",
    resourceTrigger=[
        {
            "description": "Any create, update or delete",
            "resource": _DEFINITION + "Resource",
            "supportedInteraction": ["create", "update", "delete"],
        }
    ],
    canFilterBy=[
        {
            "resource": _DEFINITION + "Resource",
            "filterParameter": "_type",
            "description": "Resource types to hear about, comma separated: `_type=Observation`",
        },
        {
            "resource": _DEFINITION + "Resource",
            "filterParameter": "*",
            "description": "Any search parameter of the resource type, written with the type:"
            " `Observation?code=http://loinc.org|8867-4`",
        },
    ],
)

TASK_READY_TOPIC: dict[str, Any] = _topic(
    "task-ready",
    "Task ready",
    "A Task is created with status `ready` or changes to `ready`.",
    resourceTrigger=[_status_change("Task", "ready", "A Task becomes ready")],
    canFilterBy=_filters(
        "Task",
        {
            "patient": ("The patient the Task is for", REFERENCE_MODIFIERS),
            "owner": ("Who is responsible for the Task", REFERENCE_MODIFIERS),
            "code": ("The Task type", TOKEN_MODIFIERS),
            "focus": ("What the Task acts on", REFERENCE_MODIFIERS),
            "requester": ("Who asked for the Task", REFERENCE_MODIFIERS),
            "based-on": ("The request the Task fulfils (e.g. a CarePlan)", REFERENCE_MODIFIERS),
        },
    ),
)

ENCOUNTER_START_TOPIC: dict[str, Any] = _topic(
    "encounter-start",
    "Encounter start",
    "An Encounter is created with status `in-progress` or changes to `in-progress` (an admission).",
    resourceTrigger=[_status_change("Encounter", "in-progress", "An Encounter starts")],
    canFilterBy=_filters(
        "Encounter",
        {
            "patient": ("The patient present at the Encounter", REFERENCE_MODIFIERS),
            "subject": ("The patient or group present at the Encounter", REFERENCE_MODIFIERS),
            "class": ("Inpatient, outpatient, emergency, ...", TOKEN_MODIFIERS),
            "type": ("The specific type of Encounter", TOKEN_MODIFIERS),
            "location": ("Where the Encounter takes place", REFERENCE_MODIFIERS),
            "service-provider": (
                "The organization responsible for the Encounter",
                REFERENCE_MODIFIERS,
            ),
        },
    ),
)

BUILTIN_TOPICS: tuple[dict[str, Any], ...] = (
    RESOURCE_CHANGE_TOPIC,
    TASK_READY_TOPIC,
    ENCOUNTER_START_TOPIC,
)


def builtin_topic_urls() -> frozenset[str]:
    return frozenset(topic["url"] for topic in BUILTIN_TOPICS)
