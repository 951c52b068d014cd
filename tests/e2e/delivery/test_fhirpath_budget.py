"""A hostile SubscriptionTopic, sent as a client would: refused when it runs away on a sample;
when it only runs away on some real change, that change notifies everyone else, the service
keeps answering, the offending subscription's `$status` says why, and a restart comes up."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.delivery.conftest import (
    HeraldFactory,
    event_numbers,
    notification_type,
    subscribe,
    subscription,
)
from tests.support.process import HeraldProcess
from tests.support.receiver import Receiver, http_receiver
from tests.support.waiting import eventually

FHIR_JSON = {"Content-Type": "application/fhir+json"}
RUNAWAY = "(1).repeat($this + 1).count() > 0"
# Passed creation before budgets (it only runs away on a Patient with a name); the trial's
# filled-in sample Patient has one, so it is refused at create now too.
RUNAWAY_ON_NAMES = "%current.name.select((1).repeat($this + 1)).count() > 0"
# Harmless on sample resources; runs away on a Patient whose family name is `Hostile`.
RUNAWAY_ON_HOSTILE = (
    "%current.name.where(family = 'Hostile').select((1).repeat($this + 1)).count() > 0"
)
TRIGGER = "SubscriptionTopic.resourceTrigger[0].fhirPathCriteria"
# Stopped by steps, deterministically, however loaded the machine is.
STEPS_ONLY = {"fhirpath_max_steps": 5000, "fhirpath_timeout_ms": 600_000}


def patient_topic(expression: str) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    return {
        "resourceType": "SubscriptionTopic",
        "url": f"http://example.org/SubscriptionTopic/{tag}",
        "status": "active",
        "resourceTrigger": [
            {
                "resource": "Patient",
                "supportedInteraction": ["create", "update"],
                "fhirPathCriteria": expression,
            }
        ],
        "canFilterBy": [{"filterParameter": "_id"}],
    }


def patient(pid: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}


def events_at(receiver: Receiver) -> list[int]:
    return [
        n
        for r in receiver.requests
        if r.status == 200 and r.json and notification_type(r.json) == "event-notification"
        for n in event_numbers(r.json)
    ]


async def status_entry(client: httpx.AsyncClient, base: str, sid: str) -> dict[str, Any]:
    answer = await client.get(f"{base}/Subscription/{sid}/$status")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["entry"][0]["resource"])


async def wait_for_error(client: httpx.AsyncClient, base: str, sid: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = [{}]

    async def in_error() -> bool:
        seen.append(await status_entry(client, base, sid))
        return seen[-1].get("status") == "error"

    await eventually(in_error, within=30, what=lambda: f"$status stayed {seen[-1]}")
    return seen[-1]


@pytest.mark.parametrize("expression", [RUNAWAY, RUNAWAY_ON_NAMES])
async def test_a_runaway_expression_is_refused_at_create_and_nothing_is_stored(
    start_herald: HeraldFactory, expression: str
) -> None:
    async with start_herald(**STEPS_ONLY) as (_, client):
        resource = patient_topic(expression)
        answer = await client.post("/SubscriptionTopic", json=resource)
        assert answer.status_code == 422, answer.text
        (issue,) = answer.json()["issue"]
        assert issue["expression"] == [TRIGGER]
        assert "exceeded the FHIRPath budget of 5000 evaluation steps" in issue["diagnostics"]
        assert "HERALD_FHIRPATH_MAX_STEPS" in issue["diagnostics"]
        found = await client.get("/SubscriptionTopic", params={"url": resource["url"]})
        assert found.json().get("entry", []) == []


async def test_a_change_that_runs_an_expression_over_budget_notifies_everyone_else(
    start_herald: HeraldFactory,
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    async with (
        http_receiver() as hostile_receiver,
        http_receiver() as other_receiver,
        start_herald(**STEPS_ONLY) as (_, client),
    ):
        topic = patient_topic(RUNAWAY_ON_HOSTILE)
        made = await client.post("/SubscriptionTopic", json=topic)
        assert made.status_code == 201, made.text
        topic_id = made.json()["id"]
        filters = (f"Patient?_id={pid}",)
        hostile = await subscribe(
            client, subscription(hostile_receiver.url, topic=topic["url"], filters=filters)
        )
        await subscribe(client, subscription(other_receiver.url, filters=filters))

        written = await client.put(f"/Patient/{pid}", json=patient(pid, "Hostile"))
        assert written.status_code == 201, written.text

        async def other_notified() -> bool:
            return events_at(other_receiver) == [1]

        await eventually(other_notified, within=30, what=lambda: "the other subscriber waited")
        entry = await wait_for_error(client, "", hostile)
        (error,) = entry["error"]
        reason = error["text"]
        assert f"SubscriptionTopic/{topic_id}" in reason and topic["url"] in reason
        assert "resourceTrigger[0].fhirPathCriteria" in reason
        assert "exceeded the FHIRPath budget of 5000 evaluation steps" in reason
        assert "HERALD_FHIRPATH_MAX_STEPS" in reason
        assert "Hostile" not in reason  # no resource content
        assert events_at(hostile_receiver) == []
        metrics = (await client.get("http://herald.test/metrics")).text
        assert 'herald_fhirpath_over_budget_total{limit="steps",stage="match"}' in metrics
        resources: list[dict[str, Any]] = []

        async def mirrored() -> bool:  # on the Subscription resource too, a moment later
            resources.append((await client.get(f"/Subscription/{hostile}")).json())
            return resources[-1]["status"] == "error" and resources[-1].get("error") == reason

        await eventually(mirrored, within=15, what=lambda: f"the resource shows {resources[-1]}")

        # A calm change of the same patient is matched as usual by both.
        await client.put(f"/Patient/{pid}", json=patient(pid, "Calm"))

        async def both_saw_it() -> bool:
            return events_at(other_receiver) == [1, 2]

        await eventually(both_saw_it, within=30, what=lambda: "the calm change was missed")


async def _health_answers_within_a_second(base_url: str, during: float) -> None:
    """Ask /healthz over and over for `during` seconds: every answer comes within a second."""
    answered = 0
    deadline = time.monotonic() + during
    async with httpx.AsyncClient(timeout=1.0) as client:  # a slower answer fails the test
        while time.monotonic() < deadline:
            assert (await client.get(f"{base_url}/healthz")).status_code == 200
            answered += 1
            await asyncio.sleep(0.1)
    assert answered >= during // 1.1  # it kept asking all along


async def test_a_real_service_stays_live_while_an_expression_spends_its_time_and_restarts(
    tmp_path: Path,
) -> None:
    """Embedded shape, real process: each hostile evaluation takes the whole time budget
    (1.5 s, steps unlimited); /healthz answers within a second all along, and after SIGKILL
    (the hostile change is matched again at start) the service becomes ready again."""
    env = {
        "HERALD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/herald.db",
        "HERALD_FHIRPATH_MAX_STEPS": str(10**12),
        "HERALD_FHIRPATH_TIMEOUT_MS": "1500",
        "HERALD_RELAY_POLL_SECONDS": "0.1",
        "HERALD_DISPATCHER_SWEEP_SECONDS": "0.2",
    }
    server = HeraldProcess(env, tmp_path / "herald.log")
    root = f"http://127.0.0.1:{server.port}"
    pid = f"p-{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(server.start)
    try:
        async with (
            http_receiver() as hostile_receiver,
            http_receiver() as other_receiver,
            httpx.AsyncClient(headers=FHIR_JSON, base_url=server.base, timeout=30) as client,
        ):
            topic = patient_topic(RUNAWAY_ON_HOSTILE)
            assert (await client.post("/SubscriptionTopic", json=topic)).status_code == 201
            filters = (f"Patient?_id={pid}",)
            hostile = await subscribe(
                client, subscription(hostile_receiver.url, topic=topic["url"], filters=filters)
            )
            await subscribe(client, subscription(other_receiver.url, filters=filters))

            health = asyncio.create_task(_health_answers_within_a_second(root, during=4.0))
            written = await client.put(f"/Patient/{pid}", json=patient(pid, "Hostile"))
            assert written.status_code == 201, written.text
            await health

            await other_receiver.wait_for(2, timeout=30)  # the handshake, then the change
            assert events_at(other_receiver) == [1]
            entry = await wait_for_error(client, "", hostile)
            assert "1500 ms (HERALD_FHIRPATH_TIMEOUT_MS)" in entry["error"][0]["text"]

            await client.put(f"/Patient/{pid}", json=patient(pid, "Hostile"))  # again, then
            await asyncio.to_thread(server.kill)  # SIGKILL before it is surely matched
        await asyncio.to_thread(server.start)  # waits for /readyz: it comes up again
        await _health_answers_within_a_second(root, during=2.0)
    finally:
        await asyncio.to_thread(server.stop)
    # SIGTERM stopped it within the grace period (uvicorn re-raises the signal once it has shut
    # down: -15); -9 would be the SIGKILL that `stop` falls back to.
    assert server.proc is not None and server.proc.returncode in (0, -15)
