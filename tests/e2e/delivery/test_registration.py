"""Registering subscriptions: what is refused (and nothing stored), what the server
advertises, classic R4 subscriptions, and the lifecycle a client can see."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from fhirstore.wire import (
    ENCOUNTER_START,
    FILTER_CRITERIA,
    RESOURCE_CHANGE,
    TASK_READY,
    TOPIC_CANONICAL,
)
from tests.e2e.delivery.conftest import (
    HeraldFactory,
    event_numbers,
    notification_type,
    subscribe,
    subscription,
    wait_for_status,
)
from tests.support.herald import running_herald, stored_counts
from tests.support.receiver import http_receiver


@pytest.fixture
async def embedded(tmp_path):  # type: ignore[no-untyped-def]
    async with running_herald(f"sqlite+aiosqlite:///{tmp_path}/h.db") as running:
        yield running


def _with_filter(resource: dict[str, Any], text: str) -> dict[str, Any]:
    resource["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": text}]}
    return resource


REFUSED = {
    "unknown topic": subscription(
        "http://127.0.0.1:9/hook", topic="http://example.org/SubscriptionTopic/nope"
    ),
    "filter not in canFilterBy": subscription(
        "http://127.0.0.1:9/hook", topic=ENCOUNTER_START, filters=("status=finished",)
    ),
    "unknown search parameter": subscription(
        "http://127.0.0.1:9/hook", filters=("Observation?no-such-param=1",)
    ),
    "unsupported channel": {
        **subscription("http://127.0.0.1:9/hook"),
        "channel": {"type": "sms", "endpoint": "tel:+15555550100"},
    },
    "unsupported payload": {
        **subscription("http://127.0.0.1:9/hook"),
        "channel": {
            "type": "rest-hook",
            "endpoint": "http://127.0.0.1:9/hook",
            "payload": "application/fhir+xml",
        },
    },
    "unknown content": subscription("http://127.0.0.1:9/hook", content="everything"),
    "malformed endpoint": subscription("not a url"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_refused_subscriptions_store_nothing(embedded, case: str) -> None:  # type: ignore[no-untyped-def]
    runtime, client = embedded
    before = await stored_counts(runtime)
    answer = await client.post("/Subscription", json=REFUSED[case])
    assert answer.status_code in (400, 422), answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"]
    assert await stored_counts(runtime) == before


async def test_capability_statement_lists_the_built_in_topics(embedded) -> None:  # type: ignore[no-untyped-def]
    _, client = embedded
    statement = (await client.get("/metadata")).json()
    [entry] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    topics = {e["valueCanonical"] for e in entry["extension"] if e["url"] == TOPIC_CANONICAL}
    assert {RESOURCE_CHANGE, ENCOUNTER_START, TASK_READY} <= topics
    assert {"status", "events", "get-ws-binding-token"} <= {op["name"] for op in entry["operation"]}
    found = (await client.get("/SubscriptionTopic", params={"url": TASK_READY})).json()
    assert found["total"] == 1 if "total" in found else len(found["entry"]) == 1


async def test_a_client_topic_can_be_subscribed_to(start_herald: HeraldFactory) -> None:
    """A SubscriptionTopic with FHIRPath criteria using %previous and %current."""
    url = f"http://example.org/SubscriptionTopic/{uuid.uuid4().hex[:8]}"
    topic = {
        "resourceType": "SubscriptionTopic",
        "url": url,
        "status": "active",
        "resourceTrigger": [
            {
                "resource": "Observation",
                "supportedInteraction": ["create", "update"],
                "fhirPathCriteria": "%current.status = 'final' and "
                "(%previous.exists().not() or %previous.status != 'final')",
            }
        ],
        "canFilterBy": [{"resource": "Observation", "filterParameter": "subject"}],
    }
    pid = f"p-{uuid.uuid4().hex[:8]}"
    async with http_receiver() as receiver, start_herald() as (_, client):
        assert (await client.post("/SubscriptionTopic", json=topic)).status_code == 201
        sub = subscription(receiver.url, topic=url, filters=(f"subject=Patient/{pid}",))
        made = await client.post("/Subscription", json=sub)
        assert made.status_code == 201, made.text
        await wait_for_status(client, made.json()["id"], "active")
        obs = {
            "resourceType": "Observation",
            "id": f"o-{pid}",
            "status": "preliminary",
            "code": {"text": "weight"},
            "subject": {"reference": f"Patient/{pid}"},
        }
        await client.put(f"/Observation/{obs['id']}", json=obs)  # not final: no
        await client.put(f"/Observation/{obs['id']}", json={**obs, "status": "final"})  # yes
        final_again = {**obs, "status": "final", "valueString": "80 kg"}
        await client.put(f"/Observation/{obs['id']}", json=final_again)  # already final: no
        await receiver.wait_for(2)
        await asyncio.sleep(0.5)

    events = [r.json for r in receiver.requests if notification_type(r.json) != "handshake"]
    assert [event_numbers(b) for b in events] == [[1]]


async def test_create_update_and_delete_are_notified(start_herald: HeraldFactory) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    async with http_receiver() as receiver, start_herald() as (_, client):
        sub = subscription(receiver.url, filters=(f"Patient?_id={pid}",), content="full-resource")
        await subscribe(client, sub)
        body = {"resourceType": "Patient", "id": pid}
        await client.put(f"/Patient/{pid}", json=body)
        await client.put(f"/Patient/{pid}", json={**body, "active": True})
        await client.delete(f"/Patient/{pid}")
        await receiver.wait_for(4)

    events = [r.json for r in receiver.requests if notification_type(r.json) != "handshake"]
    methods = [b["entry"][1]["request"]["method"] for b in events]
    assert methods == ["POST", "PUT", "DELETE"]
    assert "resource" not in events[2]["entry"][1]


async def test_classic_r4_subscription_posts_the_resource(start_herald: HeraldFactory) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    classic = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "legacy client",
        "criteria": f"Observation?subject=Patient/{pid}",
    }
    async with http_receiver() as receiver, start_herald() as (_, client):
        with_payload = {
            **classic,
            "channel": {
                "type": "rest-hook",
                "endpoint": f"{receiver.url}/payload",
                "payload": "application/fhir+json",
            },
        }
        no_payload = {
            **classic,
            "channel": {"type": "rest-hook", "endpoint": f"{receiver.url}/ping"},
        }
        for sub in (with_payload, no_payload):
            made = await client.post("/Subscription", json=sub)
            assert made.status_code == 201, made.text
            await wait_for_status(client, made.json()["id"], "active")
        obs = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "glucose"},
            "subject": {"reference": f"Patient/{pid}"},
        }
        created = (await client.post("/Observation", json=obs)).json()
        await receiver.wait_for(2)

    by_path = {r.path.rsplit("/", 1)[-1]: r for r in receiver.requests}
    assert by_path["payload"].json["id"] == created["id"]
    assert by_path["payload"].json["resourceType"] == "Observation"
    assert by_path["ping"].body == b""


async def test_heartbeats_arrive_without_traffic(start_herald: HeraldFactory) -> None:
    async with http_receiver() as receiver, start_herald() as (_, client):
        sub = subscription(receiver.url, filters=("Patient?_id=nobody",), heartbeat=1)
        await subscribe(client, sub)
        await receiver.wait_for(3, timeout=10)

    kinds = [notification_type(r.json) for r in receiver.requests]
    assert kinds[0] == "handshake"
    assert kinds[1:3] == ["heartbeat", "heartbeat"]


async def test_subscription_turns_off_when_its_end_passes(start_herald: HeraldFactory) -> None:
    async with http_receiver() as receiver, start_herald() as (runtime, client):
        end = (runtime.clock.now() + timedelta(seconds=1.5)).isoformat()
        sub = subscription(receiver.url, filters=("Patient?_id=nobody",), end=end)
        sid = await subscribe(client, sub)
        await wait_for_status(client, sid, "off", within=10)
