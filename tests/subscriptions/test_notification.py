"""Notification Bundles as the Backport IG shapes them on R4B, and classic R4 bodies.

Every Bundle and SubscriptionStatus built here is also validated with the R4B models of
fhir.resources, and checked against the `history` Bundle rules (request and response on every
entry) that the IG points out.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhirstore import fhirjson
from fhirstore.wire import DELIVERY_FAILURE_SYSTEM, SUBSCRIPTION_ERROR_SYSTEM
from subscriptions.model import Channel, ContentLevel, SubscriptionSpec
from subscriptions.notification import (
    NotificationEvent,
    classic_body,
    events_bundle,
    notification_bundle,
    status_bundle,
    subscription_status,
)
from subscriptions.status_error import StatusError

BASE = "https://herald.example/fhir"
TOPIC = "http://herald-fhir.org/fhir/SubscriptionTopic/resource-change"
NOW = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
AT = datetime(2024, 5, 1, 11, 59, tzinfo=UTC)


def spec(
    content: ContentLevel = "id-only", payload: str | None = "application/fhir+json"
) -> SubscriptionSpec:
    channel = Channel("rest-hook", "https://receiver.example/hook", payload, content)
    return SubscriptionSpec(id="sub-1", topic_url=TOPIC, filters=(), channel=channel)


def event(number: int, interaction: str, version: int | None = 1) -> NotificationEvent:
    resource = None
    if interaction != "delete":
        resource = {"resourceType": "Patient", "id": "p1", "meta": {"versionId": str(version)}}
    return NotificationEvent(
        event_number=number,
        timestamp=AT,
        focus_type="Patient",
        focus_id="p1",
        focus_version=version,
        interaction=interaction,
        resource=resource,
    )


CHANGES = [event(5, "create", 1), event(6, "update", 2), event(7, "delete", 3)]


def bundle(
    content: ContentLevel, events: list[NotificationEvent] = CHANGES, **kw: Any
) -> dict[str, Any]:
    return notification_bundle(
        spec(content),
        notification_type=kw.pop("notification_type", "event-notification"),
        status=kw.pop("status", "active"),
        events_since_start=kw.pop("events_since_start", 7),
        events=events,
        base_url=kw.pop("base_url", BASE),
        now=NOW,
        **kw,
    )


def valid_r4b(resource: dict[str, Any]) -> dict[str, Any]:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resource


def valid_history(found: dict[str, Any]) -> dict[str, Any]:
    """A valid R4B history Bundle headed by a SubscriptionStatus (backport-notification-bundle-1),
    with request and response on every entry (bdl-3, bdl-4)."""
    valid_r4b(found)
    assert found["type"] == "history"
    assert found["entry"][0]["resource"]["resourceType"] == "SubscriptionStatus"
    valid_r4b(found["entry"][0]["resource"])
    for entry in found["entry"]:
        assert entry["request"]["method"] and entry["request"]["url"]
        assert entry["response"]["status"]
    return found


def status_of(found: dict[str, Any]) -> dict[str, Any]:
    return found["entry"][0]["resource"]


def test_status_entry_is_a_status_request_answered_200() -> None:
    found = valid_history(bundle("id-only"))
    head = found["entry"][0]

    assert found["timestamp"] == "2024-05-01T12:00:00.250Z"
    assert head["fullUrl"] == f"urn:uuid:{head['resource']['id']}"
    assert head["request"] == {"method": "GET", "url": f"{BASE}/Subscription/sub-1/$status"}
    assert head["response"] == {"status": "200"}
    status = head["resource"]
    assert status["status"] == "active"
    assert status["type"] == "event-notification"
    assert status["eventsSinceSubscriptionStart"] == "7"  # R4B: a string
    assert status["subscription"] == {"reference": f"{BASE}/Subscription/sub-1"}
    assert status["topic"] == TOPIC
    assert [e["eventNumber"] for e in status["notificationEvent"]] == ["5", "6", "7"]
    assert {e["timestamp"] for e in status["notificationEvent"]} == {"2024-05-01T11:59:00.000Z"}


def test_empty_carries_only_the_status_and_no_focus() -> None:
    found = valid_history(bundle("empty"))

    assert len(found["entry"]) == 1
    events = status_of(found)["notificationEvent"]
    assert [set(e) for e in events] == [{"eventNumber", "timestamp"}] * 3


def test_id_only_names_each_focus_without_its_content() -> None:
    found = valid_history(bundle("id-only"))

    focus = [e["focus"]["reference"] for e in status_of(found)["notificationEvent"]]
    # Three versions of one resource: one fullUrl, a version-specific focus for each event
    # (FHIR resolves it to the entry with that fullUrl and version: its ETag here).
    assert focus == [f"{BASE}/Patient/p1/_history/{n}" for n in (1, 2, 3)]
    entries = found["entry"][1:]
    assert [e["fullUrl"] for e in entries] == [f"{BASE}/Patient/p1"] * 3
    assert [e["response"]["etag"] for e in entries] == ['W/"1"', 'W/"2"', 'W/"3"']
    assert all("resource" not in e for e in entries)
    assert [e["request"]["method"] for e in entries] == ["POST", "PUT", "DELETE"]


def test_full_resource_carries_each_version_and_the_interaction_that_made_it() -> None:
    found = valid_history(bundle("full-resource"))
    created, updated, deleted = found["entry"][1:]

    assert created["resource"] == CHANGES[0].resource
    assert created["request"] == {"method": "POST", "url": "Patient"}
    assert created["response"]["status"] == "201"
    assert updated["resource"]["meta"]["versionId"] == "2"
    assert updated["request"] == {"method": "PUT", "url": "Patient/p1"}
    assert updated["response"]["status"] == "200"
    assert "resource" not in deleted
    assert deleted["request"] == {"method": "DELETE", "url": "Patient/p1"}
    assert deleted["response"]["status"] == "204"
    assert [e["response"]["etag"] for e in (created, updated, deleted)] == [
        'W/"1"',
        'W/"2"',
        'W/"3"',
    ]
    assert {e["fullUrl"] for e in (created, updated, deleted)} == {f"{BASE}/Patient/p1"}


def test_full_resource_without_a_loaded_version_falls_back_to_the_reference() -> None:
    unloaded = replace(event(1, "update", None), resource=None)
    found = valid_history(bundle("full-resource", [unloaded]))

    [entry] = found["entry"][1:]
    assert entry["fullUrl"] == f"{BASE}/Patient/p1" and "resource" not in entry
    assert "etag" not in entry["response"]


@pytest.mark.parametrize("kind", ["handshake", "heartbeat"])
@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_handshake_and_heartbeat_carry_no_events(kind: str, content: ContentLevel) -> None:
    found = valid_history(bundle(content, [], notification_type=kind, events_since_start=0))

    assert len(found["entry"]) == 1
    assert status_of(found)["type"] == kind
    assert "notificationEvent" not in status_of(found)
    assert status_of(found)["eventsSinceSubscriptionStart"] == "0"


def test_an_error_without_a_failure_kind_is_text_only() -> None:
    found = valid_history(
        bundle("empty", [], status="error", errors=[StatusError("the notification failed")])
    )

    assert status_of(found)["status"] == "error"
    assert status_of(found)["error"] == [{"text": "the notification failed"}]


@pytest.mark.parametrize(
    ("failure", "hl7_code"),
    [
        ("rejected", "error-response"),
        ("unavailable", "error-response"),
        ("timeout", "no-response"),
        ("unreachable", "no-response"),
        ("blocked", None),
    ],
)
def test_a_delivery_failure_is_coded_with_hl7s_code_and_herald_s_kind(
    failure: str, hl7_code: str | None
) -> None:
    text = "HTTP 403 from https://receiver.example"
    found = valid_history(bundle("empty", [], status="error", errors=[StatusError(text, failure)]))

    [error] = status_of(found)["error"]
    codes = {c["system"]: c["code"] for c in error["coding"]}
    assert codes.get(SUBSCRIPTION_ERROR_SYSTEM) == hl7_code
    assert codes[DELIVERY_FAILURE_SYSTEM] == failure
    assert error["text"] == text


def test_trailing_slash_of_the_base_is_ignored() -> None:
    found = valid_history(bundle("id-only", CHANGES[:1], base_url=BASE + "/"))

    assert found["entry"][1]["fullUrl"] == f"{BASE}/Patient/p1"
    assert status_of(found)["subscription"]["reference"] == f"{BASE}/Subscription/sub-1"


def test_events_bundle_is_a_query_event_notification() -> None:
    found = valid_history(
        events_bundle(
            spec("full-resource"),
            status="error",
            events_since_start=7,
            events=CHANGES[1:],
            base_url=BASE,
            now=NOW,
        )
    )

    assert status_of(found)["type"] == "query-event"
    assert [e["eventNumber"] for e in status_of(found)["notificationEvent"]] == ["6", "7"]
    assert [e["request"]["method"] for e in found["entry"][1:]] == ["PUT", "DELETE"]


def test_status_bundle_is_a_searchset_of_query_status() -> None:
    statuses = [
        valid_r4b(
            subscription_status(
                replace(spec(), id=sid),
                notification_type="query-status",
                status=state,
                events_since_start=n,
                events=[],
                base_url=BASE,
            )
        )
        for sid, state, n in (("a", "active", 3), ("b", "error", 0))
    ]
    found = valid_r4b(status_bundle(statuses))

    assert found["type"] == "searchset" and found["total"] == 2
    assert [e["resource"]["subscription"]["reference"] for e in found["entry"]] == [
        f"{BASE}/Subscription/a",
        f"{BASE}/Subscription/b",
    ]
    assert [e["resource"]["type"] for e in found["entry"]] == ["query-status"] * 2
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in found["entry"])
    assert all(e["search"] == {"mode": "match"} for e in found["entry"])


def test_empty_status_bundle_is_valid() -> None:
    found = valid_r4b(status_bundle([]))

    assert found["total"] == 0 and found["entry"] == []


def test_classic_without_payload_is_an_empty_post() -> None:
    assert classic_body(spec(payload=None), CHANGES[0]) is None


def test_classic_with_payload_posts_the_resource_with_exact_decimals() -> None:
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": Decimal("70.40"), "unit": "kg"},
    }
    changed = replace(event(1, "update"), focus_type="Observation", resource=observation)

    body = classic_body(spec(), changed)

    assert body is not None and b'"value":70.40' in body
    assert fhirjson.loads(body) == observation
    valid_r4b(fhirjson.loads(body))


def test_classic_delete_is_an_empty_post() -> None:
    assert classic_body(spec(), CHANGES[2]) is None
