"""SubscriptionTopic parsing: what a topic author sees when Herald accepts or refuses a topic."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhirstore.errors import Unprocessable
from fhirstore.wire import ENCOUNTER_START, HERALD_CANONICAL, RESOURCE_CHANGE, TASK_READY
from subscriptions.builtin_topics import BUILTIN_TOPICS, builtin_topic_urls
from subscriptions.fhirpath_budget import FhirPathBudget, FhirPathRunner
from subscriptions.model import ANY_RESOURCE
from subscriptions.rules import topic_rule
from subscriptions.topics import parse_topic

TRIGGER = "SubscriptionTopic.resourceTrigger[0]"


def topic(**changes: Any) -> dict[str, Any]:
    """An IG-style Encounter topic, with `changes` applied to its first resourceTrigger."""
    resource: dict[str, Any] = {
        "resourceType": "SubscriptionTopic",
        "id": "encounter-complete",
        "url": "http://example.org/SubscriptionTopic/encounter-complete",
        "status": "active",
        "resourceTrigger": [
            {
                "resource": "http://hl7.org/fhir/StructureDefinition/Encounter",
                "supportedInteraction": ["create", "update"],
                "queryCriteria": {
                    "previous": "status:not=finished",
                    "resultForCreate": "test-passes",
                    "current": "status=finished",
                    "resultForDelete": "test-fails",
                    "requireBoth": True,
                },
            }
        ],
        "canFilterBy": [{"resource": "Encounter", "filterParameter": "patient"}],
    }
    resource["resourceTrigger"][0].update(changes)
    return resource


def refused(resource: dict[str, Any]) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        parse_topic(resource)
    assert caught.value.status == 422
    return caught.value


@pytest.mark.parametrize("resource", BUILTIN_TOPICS, ids=lambda t: t["id"])
def test_builtin_topics_are_valid_r4b_and_parse(resource: dict[str, Any]) -> None:
    get_fhir_model_class("SubscriptionTopic").model_validate(resource)
    parsed = parse_topic(resource)
    assert parsed.url == f"{HERALD_CANONICAL}/SubscriptionTopic/{resource['id']}"
    assert parsed.resource_id == resource["id"]
    assert resource["status"] == "active"


def test_builtin_topic_urls() -> None:
    assert builtin_topic_urls() == {RESOURCE_CHANGE, TASK_READY, ENCOUNTER_START}


def test_resource_change_is_about_every_type_and_allows_any_parameter() -> None:
    (parsed,) = [parse_topic(t) for t in BUILTIN_TOPICS if t["url"] == RESOURCE_CHANGE]
    (trigger,) = parsed.triggers
    assert trigger.resource_type == ANY_RESOURCE
    assert trigger.interactions == {"create", "update", "delete"}
    assert parsed.can_filter_by == {ANY_RESOURCE: frozenset({"*"})}


def test_task_ready_uses_the_state_change_pattern() -> None:
    (parsed,) = [parse_topic(t) for t in BUILTIN_TOPICS if t["url"] == TASK_READY]
    (trigger,) = parsed.triggers
    assert trigger.resource_type == "Task"
    assert trigger.interactions == {"create", "update"}
    assert trigger.query is not None
    assert trigger.query.require_both
    assert (trigger.query.result_for_create, trigger.query.result_for_delete) == (
        "test-passes",
        "test-fails",
    )
    assert parsed.can_filter_by["Task"] == {
        "patient",
        "owner",
        "code",
        "focus",
        "requester",
        "based-on",
    }


def test_resource_may_be_a_type_name_or_a_structure_definition_url() -> None:
    by_url = parse_topic(topic())
    by_name = parse_topic(topic(resource="Encounter"))
    assert by_url.triggers[0].resource_type == by_name.triggers[0].resource_type == "Encounter"


def test_query_criteria_may_name_the_type_and_join_parameters() -> None:
    parsed = parse_topic(
        topic(queryCriteria={"current": "Encounter?status=finished&class=IMP", "requireBoth": True})
    )
    query = parsed.triggers[0].query
    assert query is not None and query.current is not None
    assert [c.param.code for c in query.current] == ["status", "class"]
    assert query.previous is None


def test_missing_interactions_mean_all_three() -> None:
    resource = topic()
    del resource["resourceTrigger"][0]["supportedInteraction"]
    assert parse_topic(resource).triggers[0].interactions == {"create", "update", "delete"}


def test_can_filter_by_without_resource_is_about_the_topic_type() -> None:
    resource = topic()
    resource["canFilterBy"] = [{"filterParameter": "subject"}]
    assert parse_topic(resource).can_filter_by == {"Encounter": frozenset({"subject"})}


def test_valid_fhirpath_criteria_is_kept() -> None:
    expression = (
        "(%previous.id.empty() or (%previous.status != 'finished'))"
        " and (%current.status = 'finished')"
    )
    assert parse_topic(topic(fhirPathCriteria=expression)).triggers[0].fhirpath == expression


@pytest.mark.parametrize(
    ("changes", "element", "words"),
    [
        ({"queryCriteria": {"current": "bogus=1"}}, "queryCriteria.current", "bogus"),
        ({"queryCriteria": {"previous": "status=a&"}}, "queryCriteria.previous", "name=value"),
        (
            {"queryCriteria": {"current": "Observation?status=final"}},
            "queryCriteria.current",
            "Observation",
        ),
        ({"queryCriteria": {"current": "date=notadate"}}, "queryCriteria.current", "date"),
        (
            {"queryCriteria": {"resultForCreate": "maybe"}},
            "queryCriteria.resultForCreate",
            "test-passes",
        ),
        ({"queryCriteria": {"requireBoth": "yes"}}, "queryCriteria.requireBoth", "true or false"),
        ({"resource": "Encountr"}, "resource", "Encountr"),
        (
            {"resource": "http://example.org/StructureDefinition/MyEncounter"},
            "resource",
            "resource type",
        ),
        ({"supportedInteraction": ["create", "patch"]}, "supportedInteraction[1]", "patch"),
        ({"fhirPathCriteria": "%current.status = = 'x'"}, "fhirPathCriteria", "FHIRPath"),
        ({"fhirPathCriteria": "%current.status.frobnicate()"}, "fhirPathCriteria", "frobnicate"),
        ({"fhirPathCriteria": "%other.status = 'x'"}, "fhirPathCriteria", "other"),
    ],
)
def test_invalid_triggers_are_refused_naming_the_element(
    changes: dict[str, Any], element: str, words: str
) -> None:
    error = refused(topic(**changes))
    assert error.expression == [f"{TRIGGER}.{element}"]
    assert words in error.diagnostics


def test_query_criteria_on_every_resource_type_is_refused() -> None:
    error = refused(topic(resource="http://hl7.org/fhir/StructureDefinition/Resource"))
    assert error.expression == [f"{TRIGGER}.queryCriteria"]


def test_a_topic_without_url_is_refused() -> None:
    resource = topic()
    del resource["url"]
    assert refused(resource).expression == ["SubscriptionTopic.url"]


def test_event_triggers_are_refused() -> None:
    resource = topic()
    del resource["resourceTrigger"]
    resource["eventTrigger"] = [{"event": {"text": "admission"}, "resource": "Encounter"}]
    assert refused(resource).expression == ["SubscriptionTopic.eventTrigger"]


def test_a_topic_without_triggers_is_refused() -> None:
    resource = topic()
    del resource["resourceTrigger"]
    assert refused(resource).expression == ["SubscriptionTopic.resourceTrigger"]


@pytest.mark.parametrize(
    ("entry", "element"),
    [
        ({"resource": "Encounter", "filterParameter": "frobnication"}, "filterParameter"),
        ({"resource": "Encounter", "filterParameter": "hub.event"}, "filterParameter"),
        ({"resource": "Observation", "filterParameter": "code"}, "resource"),
        ({"resource": "Encounter"}, "filterParameter"),
    ],
)
def test_invalid_can_filter_by_is_refused(entry: dict[str, Any], element: str) -> None:
    resource = topic()
    resource["canFilterBy"] = [entry]
    assert refused(resource).expression == [f"SubscriptionTopic.canFilterBy[0].{element}"]


@pytest.mark.parametrize(
    ("path", "value", "element"),
    [
        (("resourceTrigger",), "Encounter", "SubscriptionTopic.resourceTrigger"),
        (("resourceTrigger", 0, "queryCriteria"), ["status=x"], f"{TRIGGER}.queryCriteria"),
        (("resourceTrigger", 0, "queryCriteria", "current"), 7, f"{TRIGGER}.queryCriteria.current"),
        (("canFilterBy",), [["patient"]], "SubscriptionTopic.canFilterBy[0]"),
    ],
)
def test_wrong_shapes_are_refused_not_crashed_on(
    path: tuple[Any, ...], value: Any, element: str
) -> None:
    resource = copy.deepcopy(topic())
    node: Any = resource
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    assert refused(resource).expression == [element]


# -- fhirPathCriteria tried under the budget before a topic is stored -----------------------------

HOSTILE = "(1).repeat($this + 1).count() > 0"
HOSTILE_ON_NAMES = "%current.name.select((1).repeat($this + 1)).count() > 0"


def patient_topic(expression: str) -> dict[str, Any]:
    resource = topic(resource="Patient", fhirPathCriteria=expression)
    del resource["resourceTrigger"][0]["queryCriteria"]
    resource["canFilterBy"] = [{"filterParameter": "_id"}]
    return resource


async def refused_by_trial(resource: dict[str, Any], budget: FhirPathBudget) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        await topic_rule(FhirPathRunner(budget))(resource)
    return caught.value


@pytest.mark.parametrize("expression", [HOSTILE, HOSTILE_ON_NAMES])
async def test_an_expression_over_budget_on_a_sample_is_refused_naming_element_and_limit(
    expression: str,
) -> None:
    error = await refused_by_trial(
        patient_topic(expression), FhirPathBudget(max_steps=5000, timeout_ms=600_000)
    )
    assert error.status == 422
    assert error.expression == [f"{TRIGGER}.fhirPathCriteria"]
    assert "exceeded the FHIRPath budget of 5000 evaluation steps" in error.diagnostics
    assert "HERALD_FHIRPATH_MAX_STEPS" in error.diagnostics
    assert "Patient" in error.diagnostics  # on which sample


async def test_an_expression_that_fails_on_a_sample_is_refused() -> None:
    error = await refused_by_trial(patient_topic("%current.name.family + 1 = 2"), FhirPathBudget())
    assert error.expression == [f"{TRIGGER}.fhirPathCriteria"]
    assert "failed to evaluate" in error.diagnostics


async def test_an_ordinary_expression_passes_the_trial_unchanged() -> None:
    resource = patient_topic("%previous.active.empty() and %current.active = true")
    assert await topic_rule(FhirPathRunner())(copy.deepcopy(resource)) == resource


def test_a_stored_topic_is_only_compiled_when_loaded_never_evaluated() -> None:
    """A hostile topic stored before budgets existed loads (and then meets the budget at
    match time) instead of hanging the start."""
    parsed = parse_topic(patient_topic(HOSTILE))
    assert parsed.triggers[0].fhirpath == HOSTILE


def test_chained_query_criteria_are_refused_naming_the_element() -> None:
    error = refused(topic(queryCriteria={"current": "Encounter?patient.name=eve"}))
    assert "queryCriteria.current" in error.expression[0]
    assert "'patient.name' follows references to other resources" in error.diagnostics
    reverse = topic(queryCriteria={"previous": "_has:Observation:encounter:code=1"})
    assert "queryCriteria test the changed resource's own" in refused(reverse).diagnostics
