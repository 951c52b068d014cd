"""canFilterBy.modifier: what a topic author and a subscriber see when a topic lists the
operators its filters may use."""

from __future__ import annotations

from typing import Any

import pytest

from fhirstore.errors import Unprocessable
from fhirstore.wire import ENCOUNTER_START, FILTER_CRITERIA, RESOURCE_CHANGE, TASK_READY
from subscriptions.builtin_topics import BUILTIN_TOPICS
from subscriptions.model import ANY_RESOURCE, SubscriptionSpec, Topic
from subscriptions.subscription import parse_subscription
from subscriptions.topics import parse_topic

LAB = "http://example.org/SubscriptionTopic/lab-results"


def lab_topic(*entries: dict[str, Any]) -> dict[str, Any]:
    """A topic on Observations whose canFilterBy is `entries`."""
    return {
        "resourceType": "SubscriptionTopic",
        "url": LAB,
        "status": "active",
        "resourceTrigger": [{"resource": "Observation", "supportedInteraction": ["create"]}],
        "canFilterBy": list(entries),
    }


def entry(name: str, *modifiers: str, resource: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"filterParameter": name}
    if modifiers:
        found["modifier"] = list(modifiers)
    if resource is not None:
        found["resource"] = resource
    return found


def topics(*extra: dict[str, Any]) -> dict[str, Topic]:
    parsed = [parse_topic(t) for t in (*BUILTIN_TOPICS, *extra)]
    return {topic.url: topic for topic in parsed}


def subscribe(known: dict[str, Topic], criteria: str, *filters: str) -> SubscriptionSpec:
    resource = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
        "_criteria": {"extension": [{"url": FILTER_CRITERIA, "valueString": f} for f in filters]},
    }
    return parse_subscription(resource, known.get)


def refused(known: dict[str, Topic], criteria: str, *filters: str) -> str:
    with pytest.raises(Unprocessable) as caught:
        subscribe(known, criteria, *filters)
    assert caught.value.status == 422
    return caught.value.diagnostics


def refused_topic(resource: dict[str, Any]) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        parse_topic(resource)
    assert caught.value.status == 422
    return caught.value


# -- the topic ------------------------------------------------------------------------------------


def test_a_topic_keeps_the_codes_each_parameter_allows() -> None:
    topic = parse_topic(lab_topic(entry("code", "=", "in"), entry("patient"), entry("date", "gt")))
    assert topic.filter_modifiers == {
        "Observation": {"code": {"=", "in"}, "patient": None, "date": {"gt"}}
    }


def test_several_entries_for_one_parameter_allow_what_any_allows() -> None:
    topic = parse_topic(lab_topic(entry("code", "in"), entry("code", "not-in")))
    assert topic.filter_modifiers["Observation"]["code"] == frozenset({"in", "not-in"})
    unbounded = parse_topic(lab_topic(entry("code", "in"), entry("code")))
    assert unbounded.filter_modifiers["Observation"]["code"] is None


def test_a_code_outside_the_r4b_value_set_is_refused_with_the_codes() -> None:
    error = refused_topic(lab_topic(entry("code", "=", "text")))
    assert error.expression == ["SubscriptionTopic.canFilterBy[0].modifier[1]"]
    assert "'text' is not an R4B subscription-search-modifier code" in error.diagnostics
    assert "=, eq, ne, gt, lt, ge, le, sa, eb, ap, above, below, in, not-in, of-type" in (
        error.diagnostics
    )


def test_a_code_meaningless_on_the_parameter_type_is_refused() -> None:
    error = refused_topic(lab_topic(entry("code", "gt")))
    assert "'gt' does not apply to 'code', a token parameter" in error.diagnostics
    assert "=, ne, above, below, in, not-in, of-type" in error.diagnostics
    assert "'in' does not apply" in refused_topic(lab_topic(entry("patient", "in"))).diagnostics


def test_the_builtin_topics_list_their_modifiers() -> None:
    known = topics()
    assert known[RESOURCE_CHANGE].filter_modifiers[ANY_RESOURCE] == {"_type": None, "*": None}
    task = known[TASK_READY].filter_modifiers["Task"]
    assert task["patient"] == frozenset({"="})
    assert task["code"] == frozenset({"=", "ne", "above", "below", "in", "not-in"})
    assert known[ENCOUNTER_START].filter_modifiers["Encounter"]["class"] == task["code"]


# -- the subscription -----------------------------------------------------------------------------


def test_a_modifier_the_topic_does_not_list_is_refused_naming_the_allowed_ones() -> None:
    known = topics(lab_topic(entry("code", "=", "in")))
    message = refused(known, LAB, "code:not=http://loinc.org|1234")
    assert f"topic {LAB} allows filtering Observation by 'code' only with the modifiers =, in" in (
        message
    )
    assert "`:not` (ne)" in message
    assert "`:below`" in refused(known, LAB, "code:below=http://loinc.org|1234")


def test_a_prefix_the_topic_does_not_list_is_refused() -> None:
    known = topics(lab_topic(entry("date", "ge", "le")))
    assert "the prefix `gt`" in refused(known, LAB, "date=gt2024-01-01")
    assert "the prefix `eq` (or none)" in refused(known, LAB, "date=2024-01-01")
    spec = subscribe(known, LAB, "date=ge2024-01-01", "date=le2024-12-31")
    assert [f.criterion.param.code for f in spec.filters] == ["date", "date"]


def test_equals_and_eq_allow_each_other_on_ordered_parameters() -> None:
    for listed in ("=", "eq"):
        known = topics(lab_topic(entry("date", listed)))
        subscribe(known, LAB, "date=2024-01-01")
        subscribe(known, LAB, "date=eq2024-01-01")
        assert "the prefix `lt`" in refused(known, LAB, "date=lt2024-01-01")


def test_modifiers_without_an_r4b_code_are_refused_where_modifiers_are_listed() -> None:
    known = topics(lab_topic(entry("code", "=", "ne", "in"), entry("patient")))
    message = refused(known, LAB, "code:missing=true")
    assert "`:missing` (no R4B code" in message and "only with the modifiers =, ne, in" in message
    assert "`:text`" in refused(known, LAB, "code:text=heart")
    # Where the topic lists none, every modifier Herald supports is allowed.
    subscribe(known, LAB, "patient:missing=true")


def test_a_reference_type_modifier_is_plain_equality() -> None:
    known = topics()
    spec = subscribe(known, ENCOUNTER_START, "subject:Patient=123")
    assert spec.filters[0].criterion.modifier == "Patient"
    assert "`:missing`" in refused(known, ENCOUNTER_START, "patient:missing=true")


def test_allowed_modifiers_on_a_builtin_topic_are_accepted() -> None:
    spec = subscribe(
        topics(), TASK_READY, "code:not=http://example.org/task|remind", "patient=Patient/1"
    )
    assert [(f.criterion.param.code, f.criterion.modifier) for f in spec.filters] == [
        ("code", "not"),
        ("patient", None),
    ]


def test_the_entry_naming_the_parameter_wins_over_a_star_entry() -> None:
    known = topics(lab_topic(entry("*", "="), entry("code", "=", "in")))
    assert "`:not` (ne)" in refused(known, LAB, "code:not=1234")
    assert "`:not` (ne)" in refused(known, LAB, "status:not=final")  # the `*` entry: only =
    subscribe(known, LAB, "status=final")


def test_a_star_entry_without_modifiers_allows_everything() -> None:
    subscribe(topics(), RESOURCE_CHANGE, "Observation?code:text=heart&status:missing=false")


def test_a_reverse_chain_is_refused_with_the_reason() -> None:
    message = refused(topics(), RESOURCE_CHANGE, "Patient?_has:Observation:patient:code=1234")
    assert "reverse chains (_has) are not supported in subscription filters" in message
    assert "forward chain" in message


def test_a_reverse_chain_in_classic_criteria_is_refused_too() -> None:
    resource = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": "Patient?_has:Observation:patient:code=1234",
        "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
    }
    with pytest.raises(Unprocessable) as caught:
        parse_subscription(resource, topics().get)
    assert "reverse chains (_has) are not supported" in caught.value.diagnostics
