"""Real `herald serve` processes: SIGKILL during delivery loses nothing, and two processes on one
Kafka and one PostgreSQL share the work and take over from each other."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.e2e.delivery.conftest import event_numbers, notification_type, subscription
from tests.support.databases import SHAPES, fresh_database_url, sqlite_url
from tests.support.process import HeraldProcess
from tests.support.receiver import Receiver, Request, http_receiver
from tests.support.waiting import eventually

FHIR_JSON = {"Content-Type": "application/fhir+json"}
QUICK_ENV = {
    "HERALD_DELIVERY_INITIAL_BACKOFF_SECONDS": "0.05",
    "HERALD_DELIVERY_MAX_BACKOFF_SECONDS": "0.5",
    "HERALD_DISPATCHER_SWEEP_SECONDS": "0.2",
    "HERALD_DELIVERY_LEASE_SECONDS": "2",
    "HERALD_RELAY_POLL_SECONDS": "0.1",
}


def _patient(pid: str, n: int) -> dict:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": f"V{n}"}]}


def _accepted(receiver: Receiver, path: str) -> list[Request]:
    return [
        r
        for r in receiver.requests
        if r.path == path
        and r.status == 200
        and r.json
        and notification_type(r.json) == "event-notification"
    ]


async def _wait_accepted(receiver: Receiver, path: str, count: int, within: float) -> None:
    async def done() -> bool:
        numbers = {n for r in _accepted(receiver, path) for n in event_numbers(r.json)}
        return numbers >= set(range(1, count + 1))

    def missing() -> str:
        numbers = {n for r in _accepted(receiver, path) for n in event_numbers(r.json)}
        return f"{path}: events never accepted: {sorted(set(range(1, count + 1)) - numbers)}"

    await eventually(done, within=within, what=missing)


def _assert_once_in_order_with_stable_keys(receiver: Receiver, path: str, count: int) -> None:
    """Every event arrived; a duplicate is a redelivery with the same idempotency key; the
    first arrivals are in eventNumber order."""
    keys: dict[int, set[str]] = defaultdict(set)
    first_seen: list[int] = []
    for request in receiver.requests:
        if request.path != path or not request.json:
            continue
        if notification_type(request.json) != "event-notification":
            continue
        for number in event_numbers(request.json):
            keys[number].add(request.headers["idempotency-key"])
            if number not in first_seen:
                first_seen.append(number)
    assert first_seen == list(range(1, count + 1))
    assert all(len(k) == 1 for k in keys.values()), keys


async def _subscribe(
    client: httpx.AsyncClient, base: str, endpoint: str, pid: str, kind: str = "Patient"
) -> str:
    criteria = f"Patient?_id={pid}" if kind == "Patient" else f"{kind}?subject=Patient/{pid}"
    made = await client.post(
        f"{base}/Subscription", json=subscription(endpoint, filters=(criteria,))
    )
    assert made.status_code == 201, made.text
    sid = str(made.json()["id"])

    async def active() -> bool:
        return (await client.get(f"{base}/Subscription/{sid}")).json()["status"] == "active"

    await eventually(active, within=30, what=lambda: f"Subscription/{sid} never became active")
    return sid


@pytest.fixture(params=SHAPES)
def process_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "embedded":
        return {"HERALD_DATABASE_URL": sqlite_url(tmp_path)}
    url = fresh_database_url(request, "postgres", tmp_path)
    return {
        "HERALD_DATABASE_URL": url,
        "HERALD_KAFKA_BOOTSTRAP": request.getfixturevalue("kafka_bootstrap"),
        "HERALD_KAFKA_NAMESPACE": f"t{uuid.uuid4().hex[:8]}.",
    }


async def test_sigkill_during_delivery_loses_nothing(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    pid, count = f"p-{uuid.uuid4().hex[:8]}", 40
    server = HeraldProcess({**process_env, **QUICK_ENV}, tmp_path / "herald.log")
    await asyncio.to_thread(server.start)
    try:
        async with http_receiver() as receiver, httpx.AsyncClient(headers=FHIR_JSON) as client:
            await _subscribe(client, server.base, receiver.url, pid)
            receiver.slow(0.05)  # deliveries take a while: the kill lands in the middle
            for n in range(count):
                put = await client.put(f"{server.base}/Patient/{pid}", json=_patient(pid, n))
                assert put.status_code in (200, 201)
            await receiver.wait_for(5, timeout=30)
            await asyncio.to_thread(server.kill)
            delivered_before_kill = {
                n for r in _accepted(receiver, "/hook") for n in event_numbers(r.json)
            }
            receiver.slow(0)
            await asyncio.to_thread(server.start)
            await _wait_accepted(receiver, "/hook", count, within=60)
    finally:
        await asyncio.to_thread(server.stop)

    assert len(delivered_before_kill) < count  # the kill did land mid-delivery
    _assert_once_in_order_with_stable_keys(receiver, "/hook", count)


async def _scaled_out_env(
    fresh_database: Callable[[str], str], kafka_bootstrap: str
) -> dict[str, str]:
    """PostgreSQL and Kafka for two processes, with 6 partitions per topic (as a deployment
    would create them), so that matching and delivery really are split."""
    namespace = f"t{uuid.uuid4().hex[:8]}."
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(namespace + topic, num_partitions=6, replication_factor=1)
                for topic in ("fhir.changes", "herald.notifications")
            ]
        )
    finally:
        await admin.close()
    return {
        **QUICK_ENV,
        "HERALD_DATABASE_URL": fresh_database(f"pair_{uuid.uuid4().hex[:8]}"),
        "HERALD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HERALD_KAFKA_NAMESPACE": namespace,
    }


def _observation(pid: str, n: int) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"o{n}-{pid}",
        "status": "final",
        "code": {"text": "pulse"},
        "subject": {"reference": f"Patient/{pid}"},
    }


async def _write_observations(client: httpx.AsyncClient, base: str, pid: str, count: int) -> None:
    """`count` Observations for `pid`, each its own key: they land on every partition."""
    for n in range(count):
        put = await client.put(f"{base}/Observation/o{n}-{pid}", json=_observation(pid, n))
        assert put.status_code == 201, put.text


async def test_a_subscription_hears_the_very_next_change_through_another_process(
    fresh_database: Callable[[str], str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = await _scaled_out_env(fresh_database, kafka_bootstrap)
    env["HERALD_DISPATCHER_SWEEP_SECONDS"] = "60"  # no help from the periodic look-around
    first = HeraldProcess(env, tmp_path / "first.log")
    second = HeraldProcess(env, tmp_path / "second.log")
    await asyncio.gather(asyncio.to_thread(first.start), asyncio.to_thread(second.start))
    warm, pid, count = f"w-{uuid.uuid4().hex[:8]}", f"p-{uuid.uuid4().hex[:8]}", 12
    try:
        async with http_receiver() as receiver, httpx.AsyncClient(headers=FHIR_JSON) as client:
            # Both matchers are consuming every partition once a first subscription heard all.
            await _subscribe(client, first.base, f"{receiver.url}/warm", warm, "Observation")
            await _write_observations(client, second.base, warm, count)
            await _wait_accepted(receiver, "/hook/warm", count, within=60)

            sub = subscription(receiver.url, filters=(f"Observation?subject=Patient/{pid}",))
            assert (await client.post(f"{first.base}/Subscription", json=sub)).status_code == 201
            await _write_observations(client, second.base, pid, count)  # at once, elsewhere
            await _wait_accepted(receiver, "/hook", count, within=60)
    finally:
        await asyncio.gather(asyncio.to_thread(first.stop), asyncio.to_thread(second.stop))
    _assert_once_in_order_with_stable_keys(receiver, "/hook", count)


async def test_two_processes_share_the_work_and_take_over(
    fresh_database: Callable[[str], str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = await _scaled_out_env(fresh_database, kafka_bootstrap)
    first = HeraldProcess(env, tmp_path / "first.log")
    second = HeraldProcess(env, tmp_path / "second.log")
    await asyncio.gather(asyncio.to_thread(first.start), asyncio.to_thread(second.start))
    # 12 subscriptions over 6 partitions, 3 per process: all on one side has odds of 1 in 2,048.
    patients = [f"p{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    try:
        async with http_receiver() as receiver, httpx.AsyncClient(headers=FHIR_JSON) as client:
            for i, pid in enumerate(patients):
                base = (first, second)[i % 2].base
                await _subscribe(client, base, f"{receiver.url}/{pid}", pid)
            for n in range(5):
                for i, pid in enumerate(patients):
                    base = (first, second)[(i + n) % 2].base
                    await client.put(f"{base}/Patient/{pid}", json=_patient(pid, n))
            for pid in patients:
                await _wait_accepted(receiver, f"/hook/{pid}", 5, within=60)
            in_normal_operation = list(receiver.requests)
            shares = await asyncio.gather(*(_delivered_events(p) for p in (first, second)))

            await asyncio.to_thread(first.kill)
            for n in range(5, 10):
                for pid in patients:
                    await client.put(f"{second.base}/Patient/{pid}", json=_patient(pid, n))
            for pid in patients:
                await _wait_accepted(receiver, f"/hook/{pid}", 10, within=90)
    finally:
        await asyncio.gather(asyncio.to_thread(first.stop), asyncio.to_thread(second.stop))

    events_before_kill = [
        (r.path, n)
        for r in in_normal_operation
        if r.json and notification_type(r.json) == "event-notification"
        for n in event_numbers(r.json)
    ]
    assert len(events_before_kill) == len(set(events_before_kill)) == 60  # each exactly once
    assert all(share > 0 for share in shares), f"one process did it all: {shares}"
    for pid in patients:
        _assert_once_in_order_with_stable_keys(receiver, f"/hook/{pid}", 10)


async def _delivered_events(process: HeraldProcess) -> float:
    """What this process's dispatcher delivered, from its Prometheus /metrics."""
    root = process.base.removesuffix("/fhir")
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{root}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("herald_events_delivered_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _bundle(method: str, resources: list[dict]) -> dict:
    def url(resource: dict) -> str:
        kind = resource["resourceType"]
        return f"{kind}/{resource['id']}" if method == "PUT" else kind

    entries = [{"resource": r, "request": {"method": method, "url": url(r)}} for r in resources]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def test_sigkill_while_many_handshakes_are_in_flight_leaves_none_behind(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    tag, count = uuid.uuid4().hex[:8], 30
    patients = [f"h{tag}-{n}" for n in range(count)]
    server = HeraldProcess({**process_env, **QUICK_ENV}, tmp_path / "herald.log")
    await asyncio.to_thread(server.start)
    try:
        async with http_receiver() as receiver, httpx.AsyncClient(headers=FHIR_JSON) as client:
            receiver.slow(1.0)  # the handshakes are in flight when the kill lands
            subs = [subscription(receiver.url, filters=(f"Patient?_id={p}",)) for p in patients]
            made = await client.post(server.base, json=_bundle("POST", subs))
            assert made.status_code == 200, made.text
            ids = [e["response"]["location"].split("/")[1] for e in made.json()["entry"]]
            changed = await client.post(
                server.base, json=_bundle("PUT", [_patient(p, 0) for p in patients])
            )
            assert changed.status_code == 200, changed.text
            await receiver.wait_for(1, timeout=30)
            await asyncio.to_thread(server.kill)
            receiver.slow(0)
            await asyncio.to_thread(server.start)

            async def all_active() -> bool:
                for sid in ids:
                    got = await client.get(f"{server.base}/Subscription/{sid}")
                    if got.json()["status"] != "active":
                        return False
                return True

            await eventually(all_active, within=60, what=lambda: "not every one became active")
            await receiver.wait_for(2 * count, timeout=60)
            await asyncio.sleep(1.0)  # anything sent once more arrives too
    finally:
        await asyncio.to_thread(server.stop)

    kinds: dict[str, list[str]] = defaultdict(list)
    for r in receiver.requests:
        kinds[r.headers["idempotency-key"].split(":")[0]].append(notification_type(r.json))
    assert sorted(kinds) == sorted(ids)
    assert sum(k.count("handshake") for k in kinds.values()) > count  # the kill cut some off
    for sid in ids:  # a handshake cut off by the kill is sent again; events come after it
        first_event = kinds[sid].index("event-notification")
        assert set(kinds[sid][:first_event]) == {"handshake"}, kinds[sid]
        assert set(kinds[sid][first_event:]) == {"event-notification"}, kinds[sid]
