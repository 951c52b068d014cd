"""The Kafka queue channel end to end: a Subscription whose notifications Herald writes to a
Kafka topic, read back by a plain aiokafka consumer as an integrator would."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from fhirstore.wire import CHANNEL_TYPE, HERALD_CHANNEL_TYPES
from tests.e2e.delivery.conftest import (
    HeraldFactory,
    event_numbers,
    notification_type,
    subscription,
    wait_for_status,
)
from tests.support.topics import read_topic

KAFKA_CHANNEL = {
    "url": CHANNEL_TYPE,
    "valueCoding": {"system": HERALD_CHANNEL_TYPES, "code": "kafka"},
}


def queue_subscription(patient: str, topic: str) -> dict[str, Any]:
    resource = subscription("", filters=(f"Observation?subject=Patient/{patient}",))
    resource["channel"] = {
        **resource["channel"],
        "type": "message",
        "_type": {"extension": [KAFKA_CHANNEL]},
        "endpoint": f"kafka:{topic}",
    }
    return resource


async def test_notifications_reach_the_queue_topic_in_order(
    start_herald: HeraldFactory, kafka_bootstrap: str
) -> None:
    patient, topic = f"p-{uuid.uuid4().hex[:8]}", f"alerts.{uuid.uuid4().hex[:8]}"
    settings = {"kafka_bootstrap": kafka_bootstrap, "queue_topics": "alerts.*"}
    async with start_herald(**settings) as (_, client):
        made = await client.post("/Subscription", json=queue_subscription(patient, topic))
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        await wait_for_status(client, sid, "active")
        for n in range(3):
            observation = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": f"reading {n}"},
                "subject": {"reference": f"Patient/{patient}"},
            }
            assert (await client.post("/Observation", json=observation)).is_success
        records = await read_topic(kafka_bootstrap, topic, 4)

    bundles = [orjson.loads(r.value) for r in records]
    assert [notification_type(b) for b in bundles] == ["handshake"] + ["event-notification"] * 3
    assert [event_numbers(b) for b in bundles[1:]] == [[1], [2], [3]]
    assert {r.key.decode() for r in records} == {sid}
    keys = [dict(r.headers)["Idempotency-Key"].decode() for r in records[1:]]
    assert keys == [f"{sid}:1", f"{sid}:2", f"{sid}:3"]


async def test_topics_the_administrator_does_not_allow_are_refused_at_create(
    start_herald: HeraldFactory, kafka_bootstrap: str
) -> None:
    settings = {"kafka_bootstrap": kafka_bootstrap, "queue_topics": "alerts.*"}
    async with start_herald(**settings) as (_, client):
        answers = {
            topic: await client.post("/Subscription", json=queue_subscription("p", topic))
            for topic in ("billing", "fhir.changes", "herald.notifications", "bad topic!")
        }
    async with start_herald() as (_, client):
        without_kafka = await client.post("/Subscription", json=queue_subscription("p", "alerts.x"))

    for topic, answer in answers.items():
        assert answer.status_code == 422, topic
        # "bad topic!" is not even a FHIR url (no spaces): validation names the endpoint itself.
        expected = "Subscription.channel" + (".endpoint" if " " in topic else "")
        assert answer.json()["issue"][0]["expression"] == [expected], topic
    assert "alerts." in answers["billing"].json()["issue"][0]["diagnostics"]
    assert without_kafka.status_code == 422
