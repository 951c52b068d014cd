"""Notification Bundles in the Backport IG's R4 form: the status is a Parameters resource with
the profile `backport-subscription-status-r4`, and says exactly what the R4B SubscriptionStatus
of the same notification says.

Every notification type and content level is built in both forms from the same events and
compared fact by fact. The Parameters and Bundle resources are the same in R4 and R4B, so the
R4B models of fhir.resources check their structure; each `parameter` is also held to the slice
the IG's profile defines for its name (value type, cardinality).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from fhirstore.wire import STATUS_R4_PROFILE, SUBSCRIPTION_ERROR_SYSTEM
from subscriptions.model import ContentLevel, NotificationType, SubscriptionSpec
from subscriptions.notification import (
    NotificationEvent,
    events_bundle,
    notification_bundle,
    status_bundle,
    subscription_status,
)
from subscriptions.status_error import StatusError
from tests.subscriptions.test_notification import (
    BASE,
    CHANGES,
    NOW,
    TOPIC,
    spec,
    valid_history,
    valid_r4b,
)

CONTENTS: tuple[ContentLevel, ...] = ("empty", "id-only", "full-resource")
TYPES: tuple[NotificationType, ...] = (
    "handshake",
    "heartbeat",
    "event-notification",
    "query-status",
    "query-event",
)
# The profile's slices: name -> (value[x] type, min, max); notification-event has parts.
SLICES = {
    "subscription": ("valueReference", 1, 1),
    "topic": ("valueCanonical", 0, 1),
    "status": ("valueCode", 1, 1),
    "type": ("valueCode", 1, 1),
    "events-since-subscription-start": ("valueString", 0, 1),
    "notification-event": (None, 0, None),
    "error": ("valueCodeableConcept", 0, None),
}
PARTS = {
    "event-number": ("valueString", 1, 1),
    "timestamp": ("valueInstant", 0, 1),
    "focus": ("valueReference", 0, 1),
    "additional-context": ("valueReference", 0, None),
}


def r4_spec(content: ContentLevel = "id-only") -> SubscriptionSpec:
    made = spec(content, payload="application/fhir+json;fhirVersion=4.0")
    return replace(made, channel=replace(made.channel, fhir_version="4.0"))


def both(
    content: ContentLevel,
    kind: NotificationType = "event-notification",
    events: list[NotificationEvent] = CHANGES,
    **kw: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same notification as an R4 subscription and as an R4B one gets it."""
    made = []
    for subscription in (r4_spec(content), spec(content)):
        made.append(
            notification_bundle(
                subscription,
                notification_type=kind,
                status=kw.get("status", "active"),
                events_since_start=kw.get("events_since_start", 7),
                events=events,
                base_url=BASE,
                now=NOW,
                errors=kw.get("errors", ()),
            )
        )
    return made[0], made[1]


def conforms(parameters: dict[str, Any]) -> dict[str, Any]:
    """`parameters` as the IG's R4 status profile wants it, and as R4B's Parameters model."""
    valid_r4b(parameters)
    assert parameters["meta"]["profile"] == [STATUS_R4_PROFILE]
    _held_to(parameters["parameter"], SLICES)
    for event in _named(parameters, "notification-event"):
        assert set(event) == {"name", "part"}
        _held_to(event["part"], PARTS)
    return parameters


def _held_to(given: list[dict[str, Any]], slices: dict[str, Any]) -> None:
    for name, (value_type, least, most) in slices.items():
        found = [p for p in given if p["name"] == name]
        assert least <= len(found) and (most is None or len(found) <= most), name
        for parameter in found:
            if value_type is not None:
                assert set(parameter) == {"name", value_type}, parameter
    assert {p["name"] for p in given} <= set(slices)


def _named(parameters: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in parameters["parameter"] if p["name"] == name]


def _value(parameters: dict[str, Any], name: str) -> Any:
    [parameter] = _named(parameters, name)
    return next(v for k, v in parameter.items() if k.startswith("value"))


def facts_r4(parameters: dict[str, Any]) -> dict[str, Any]:
    """What an R4 status says, in R4B's element names."""
    events = []
    for event in _named(parameters, "notification-event"):
        parts = {p["name"]: p for p in event["part"]}
        found = {
            "eventNumber": parts["event-number"]["valueString"],
            "timestamp": parts["timestamp"]["valueInstant"],
        }
        if "focus" in parts:
            found["focus"] = parts["focus"]["valueReference"]
        events.append(found)
    return {
        "subscription": _value(parameters, "subscription"),
        "topic": _value(parameters, "topic"),
        "status": _value(parameters, "status"),
        "type": _value(parameters, "type"),
        "eventsSinceSubscriptionStart": _value(parameters, "events-since-subscription-start"),
        "notificationEvent": events,
        "error": [p["valueCodeableConcept"] for p in _named(parameters, "error")],
    }


def facts_r4b(status: dict[str, Any]) -> dict[str, Any]:
    names = ("subscription", "topic", "status", "type", "eventsSinceSubscriptionStart")
    return {
        **{name: status[name] for name in names},
        "notificationEvent": status.get("notificationEvent", []),
        "error": status.get("error", []),
    }


def after_status(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries after the status, which must be the same in both forms."""
    return list(bundle["entry"][1:])


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("content", CONTENTS)
def test_every_type_and_level_says_in_r4_what_r4b_says(
    content: ContentLevel, kind: NotificationType
) -> None:
    events = [] if kind in ("handshake", "heartbeat", "query-status") else CHANGES
    r4, r4b = both(content, kind, events, events_since_start=0 if not events else 7)

    valid_history(r4b)
    valid_r4b(r4)
    head = r4["entry"][0]
    parameters = conforms(head["resource"])
    assert facts_r4(parameters) == facts_r4b(r4b["entry"][0]["resource"])
    assert head["fullUrl"] == f"urn:uuid:{parameters['id']}"
    assert head["request"] == {"method": "GET", "url": f"{BASE}/Subscription/sub-1/$status"}
    assert head["response"] == {"status": "200"}
    assert r4["type"] == "history" and r4["timestamp"] == r4b["timestamp"]
    assert after_status(r4) == after_status(r4b)
    for entry in r4["entry"]:  # bdl-3, bdl-4
        assert entry["request"]["method"] and entry["request"]["url"]
        assert entry["response"]["status"]


def test_empty_names_no_focus_and_carries_only_the_status() -> None:
    r4, _ = both("empty")

    assert len(r4["entry"]) == 1
    events = _named(r4["entry"][0]["resource"], "notification-event")
    assert [[p["name"] for p in e["part"]] for e in events] == [["event-number", "timestamp"]] * 3


def test_id_only_names_each_focus_and_lists_it_without_content() -> None:
    r4, _ = both("id-only")
    parameters = r4["entry"][0]["resource"]

    events = _named(parameters, "notification-event")
    assert [e["part"][0]["valueString"] for e in events] == ["5", "6", "7"]
    assert [e["part"][1]["valueInstant"] for e in events] == ["2024-05-01T11:59:00.000Z"] * 3
    assert [e["part"][2] for e in events] == [
        {"name": "focus", "valueReference": {"reference": f"{BASE}/Patient/p1/_history/{n}"}}
        for n in (1, 2, 3)
    ]
    assert [e["fullUrl"] for e in r4["entry"][1:]] == [f"{BASE}/Patient/p1"] * 3
    assert all("resource" not in e for e in r4["entry"][1:])


def test_full_resource_carries_each_version_but_none_for_a_delete() -> None:
    r4, _ = both("full-resource")

    created, updated, deleted = r4["entry"][1:]
    assert created["resource"] == CHANGES[0].resource
    assert updated["resource"] == CHANGES[1].resource
    assert "resource" not in deleted
    assert [e["request"]["method"] for e in (created, updated, deleted)] == [
        "POST",
        "PUT",
        "DELETE",
    ]


def test_the_parameters_name_the_subscription_topic_type_and_count() -> None:
    r4, _ = both("id-only", "heartbeat", [], events_since_start=4)
    parameters = r4["entry"][0]["resource"]

    assert parameters["resourceType"] == "Parameters"
    assert _value(parameters, "subscription") == {"reference": f"{BASE}/Subscription/sub-1"}
    assert _value(parameters, "topic") == TOPIC
    assert _value(parameters, "status") == "active"
    assert _value(parameters, "type") == "heartbeat"
    assert _value(parameters, "events-since-subscription-start") == "4"  # a string, as in R4B
    assert _named(parameters, "notification-event") == []


def test_each_error_is_its_own_parameter_coded_as_in_r4b() -> None:
    errors = [StatusError("HTTP 500", "unavailable"), StatusError("not built")]
    r4, r4b = both("empty", "heartbeat", [], status="error", errors=errors)
    parameters = conforms(r4["entry"][0]["resource"])

    assert _value(parameters, "status") == "error"
    concepts = [p["valueCodeableConcept"] for p in _named(parameters, "error")]
    assert concepts == r4b["entry"][0]["resource"]["error"]
    assert concepts[0]["coding"][0] == {
        "system": SUBSCRIPTION_ERROR_SYSTEM,
        "code": "error-response",
        "display": "Error response",
    }
    assert concepts[0]["text"] == "HTTP 500"
    assert concepts[1] == {"text": "not built"}


def test_an_event_withheld_from_the_caller_shows_no_focus_and_no_entry() -> None:
    hidden = replace(CHANGES[1], withheld=True)
    found = events_bundle(
        r4_spec("full-resource"),
        status="active",
        events_since_start=7,
        events=[CHANGES[0], hidden],
        base_url=BASE,
        now=NOW,
    )

    events = _named(conforms(found["entry"][0]["resource"]), "notification-event")
    assert [len(e["part"]) for e in events] == [3, 2]  # the withheld one: number and time only
    assert len(found["entry"]) == 2


def test_the_version_asked_for_overrides_the_channels() -> None:
    """`$status` and `$events` answer in the request's version, not the subscription's."""
    as_r4 = events_bundle(
        spec("id-only"), status="active", events_since_start=7, events=CHANGES, base_url=BASE,
        now=NOW, fhir_version="4.0",
    )  # fmt: skip
    as_r4b = events_bundle(
        r4_spec("id-only"), status="active", events_since_start=7, events=CHANGES,
        base_url=BASE, now=NOW, fhir_version="4.3",
    )  # fmt: skip

    assert as_r4["entry"][0]["resource"]["resourceType"] == "Parameters"
    assert as_r4b["entry"][0]["resource"]["resourceType"] == "SubscriptionStatus"
    assert _value(as_r4["entry"][0]["resource"], "type") == "query-event"


def test_status_searchset_holds_r4_parameters() -> None:
    statuses = [
        conforms(
            subscription_status(
                replace(spec(), id=sid),
                notification_type="query-status",
                status=state,
                events_since_start=n,
                events=[],
                base_url=BASE,
                fhir_version="4.0",
            )
        )
        for sid, state, n in (("a", "active", 3), ("b", "error", 0))
    ]
    found = valid_r4b(status_bundle(statuses))

    assert found["type"] == "searchset" and found["total"] == 2
    assert [_value(e["resource"], "subscription") for e in found["entry"]] == [
        {"reference": f"{BASE}/Subscription/a"},
        {"reference": f"{BASE}/Subscription/b"},
    ]
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in found["entry"])
