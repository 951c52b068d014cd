"""The change stream: every committed write reaches the bus once, in per-resource order.

Runs on the in-process bus and on a real Kafka broker read by a plain aiokafka consumer.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from events.bus import Message
from events.bus.kafka import KafkaBus
from events.bus.memory import MemoryBus
from events.model import ChangeEvent
from fhirstore.wire import CHANGES_TOPIC
from tests.support.changes import read_changes, versions_by_key
from tests.support.herald import running_herald


async def test_in_process_consumers_receive_every_change_in_order(database_url: str) -> None:
    bus = MemoryBus()
    received: list[ChangeEvent] = []
    three = asyncio.Event()

    async def consume(message: Message) -> None:
        if message.key.startswith("SubscriptionTopic/"):
            return  # the built-in topics, seeded at start
        received.append(ChangeEvent.from_json(message.value))
        if len(received) >= 3:
            three.set()

    bus.subscribe(CHANGES_TOPIC, "test", consume)
    async with running_herald(database_url, bus=bus) as (_, client):
        made = (await client.post("/Patient", json={"resourceType": "Patient"})).json()
        pid = made["id"]
        await client.put(
            f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "active": True}
        )
        await client.delete(f"/Patient/{pid}")
        async with asyncio.timeout(5):
            await three.wait()

    assert [e.interaction for e in received] == ["create", "update", "delete"]
    assert [e.version_id for e in received] == ["1", "2", "3"]
    assert [e.previous_version_id for e in received] == [None, "1", "2"]
    assert received[0].resource is not None and received[0].resource["id"] == pid
    assert received[1].resource is not None and received[1].resource["active"] is True
    assert received[2].resource is None
    assert all(e.key == f"Patient/{pid}" for e in received)
    sequences = [e.sequence for e in received]
    assert sequences == sorted(sequences)
    assert len({e.event_id for e in received}) == 3
    # UUID version 7: the first 48 bits are the write's time in ms, so ids grow with time.
    ids = [uuid.UUID(e.event_id) for e in received]
    assert [i.version for i in ids] == [7, 7, 7]
    assert [i.int >> 80 for i in ids] == sorted(i.int >> 80 for i in ids)


async def test_integrator_reads_changes_from_kafka(
    database_url: str, kafka_bootstrap: str, tmp_path
) -> None:
    url = database_url
    async with running_herald(url, bus=KafkaBus(kafka_bootstrap)) as (_, client):
        ids = [f"p-{uuid.uuid4().hex[:12]}" for _ in range(3)]
        for round_ in range(4):
            for pid in ids:
                body = {"resourceType": "Patient", "id": pid, "birthDate": f"200{round_}-01-01"}
                assert (await client.put(f"/Patient/{pid}", json=body)).status_code in (200, 201)
        keys = {f"Patient/{pid}" for pid in ids}
        seen = await read_changes(kafka_bootstrap, keys, expect=12)

    assert len(seen) == 12
    assert len({s.event_id for s in seen}) == 12
    for versions in versions_by_key(seen).values():
        assert versions == [1, 2, 3, 4]
    first = next(s.body for s in seen if s.body["versionId"] == "1")
    assert first["interaction"] == "create" and first["resourceType"] == "Patient"
    assert first["resource"]["birthDate"] == "2000-01-01"


async def test_broker_outage_loses_nothing(kafka_broker, database_url: str) -> None:
    if not kafka_broker.controllable:
        pytest.skip("an external broker (HERALD_TEST_KAFKA_BOOTSTRAP) cannot be stopped")
    bootstrap = kafka_broker.bootstrap
    ids = [f"o-{uuid.uuid4().hex[:12]}" for _ in range(2)]

    async def write_round(client, round_: int) -> None:
        for pid in ids:
            body = {"resourceType": "Patient", "id": pid, "gender": ["male", "female"][round_ % 2]}
            assert (await client.put(f"/Patient/{pid}", json=body)).status_code in (200, 201)

    async with running_herald(database_url, bus=KafkaBus(bootstrap)) as (
        _,
        client,
    ):
        for round_ in range(3):
            await write_round(client, round_)
        await asyncio.to_thread(kafka_broker.stop)
        for round_ in range(3, 6):  # the API keeps accepting writes while the broker is down
            await write_round(client, round_)
        await asyncio.to_thread(kafka_broker.start)
        seen = await read_changes(bootstrap, {f"Patient/{p}" for p in ids}, expect=12, within=90)

    by_key = versions_by_key(seen)
    for pid in ids:
        versions = by_key[f"Patient/{pid}"]
        assert sorted(set(versions)) == [1, 2, 3, 4, 5, 6]
        first_seen = list(dict.fromkeys(versions))
        assert first_seen == [1, 2, 3, 4, 5, 6]
    per_version_ids: dict[tuple[str, int], set[str]] = {}
    for s in seen:
        per_version_ids.setdefault((s.key, int(s.body["versionId"])), set()).add(s.event_id)
    assert all(len(v) == 1 for v in per_version_ids.values())


async def test_change_events_carry_the_resource_exactly(database_url: str) -> None:
    bus = MemoryBus()
    raw: list[bytes] = []
    got = asyncio.Event()

    async def consume(message: Message) -> None:
        if message.key.startswith("SubscriptionTopic/"):
            return  # the built-in topics, seeded at start
        raw.append(message.value)
        got.set()

    bus.subscribe(CHANGES_TOPIC, "test", consume)
    body = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"k"},'
        b'"valueQuantity":{"value":4.10,"unit":"mmol/L"}}'
    )
    async with running_herald(database_url, bus=bus) as (_, client):
        created = await client.post("/Observation", content=body)
        async with asyncio.timeout(5):
            await got.wait()
    assert b'"value":4.10' in raw[0]
    event = ChangeEvent.from_json(raw[0])
    assert event.resource is not None and event.resource["id"] == created.json()["id"]
    assert event.key == f"Observation/{created.json()['id']}"
    assert event.previous_version_id is None
