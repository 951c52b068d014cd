"""What Herald says of a stored Subscription it cannot load: the kind of cause, the element and
the filter parameter names for logs (never the values), the reason for its owner, and a
stand-in for `$status`."""

from __future__ import annotations

from typing import Any

import pytest

from fhirstore import FhirError
from fhirstore.wire import FILTER_CRITERIA, TASK_READY
from subscriptions.builtin_topics import TASK_READY_TOPIC
from subscriptions.channel import REST_HOOK_ONLY
from subscriptions.subscription import parse_subscription
from subscriptions.topics import parse_topic
from subscriptions.unloaded import REASON_PREFIX, Unloaded, UnloadedTopic, diagnose

SECRET = "Qjxzvorrelbeck"


def _subscription(criteria: str, *filters: str, **more: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": "s1",
        "status": "active",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
        **more,
    }
    if filters:
        resource["_criteria"] = {
            "extension": [{"url": FILTER_CRITERIA, "valueString": f} for f in filters]
        }
    return resource


def _diagnosed(resource: dict[str, Any], broken: UnloadedTopic | None = None) -> Unloaded:
    topics = {TASK_READY: parse_topic(TASK_READY_TOPIC)}
    with pytest.raises(FhirError) as raised:
        parse_subscription(resource, topics.get)
    return diagnose(
        "s1",
        resource,
        raised.value,
        topic_known=lambda url: url in topics,
        topic_problem=lambda url: broken if broken and broken.url == url else None,
        channels=REST_HOOK_ONLY,
    )


def test_a_refused_filter_is_named_by_element_and_parameter_never_by_value() -> None:
    item = _diagnosed(
        _subscription(TASK_READY, "Task?owner=Practitioner/1", f"Task?code:text={SECRET}&owner=x")
    )
    assert item.kind == "filter"
    assert item.element.startswith("Subscription.criteria.extension[1]")
    assert item.parameters == ("code:text", "owner")
    assert SECRET not in f"{item.kind} {item.element} {item.parameters}"
    assert item.reason.startswith(REASON_PREFIX) and "`:text`" in item.reason
    assert item.spec.status == "error" and item.spec.topic_url == TASK_READY
    assert item.spec.channel.endpoint == "https://example.org/hook"  # for $events


def test_an_unknown_topic_and_a_topic_that_cannot_be_loaded_are_told_apart() -> None:
    url = "http://example.org/SubscriptionTopic/gone"
    gone = _diagnosed(_subscription(url))
    assert gone.kind == "topic" and "is not a SubscriptionTopic this server knows" in gone.reason
    broken = UnloadedTopic("lab", url, "SubscriptionTopic.resourceTrigger[0]", "is wrong")
    named = _diagnosed(_subscription(url), broken)
    assert named.kind == "topic"
    assert f"its topic SubscriptionTopic/lab ({url}) cannot be loaded: is wrong" in named.reason


def test_an_off_subscription_stays_off_and_a_channel_problem_is_a_channel_kind() -> None:
    off = _diagnosed(_subscription(TASK_READY, "Task?owner:missing=true", status="off"))
    assert off.spec.status == "off"
    mailed = _subscription(TASK_READY)
    mailed["channel"] = {"type": "email", "endpoint": "mailto:a@example.org"}
    item = _diagnosed(mailed)  # this server serves REST hooks only
    assert item.kind == "channel" and item.element.startswith("Subscription.channel")
    assert item.spec.channel.content == "empty"  # nothing of it parses: a stand-in that says so
