"""REST hook delivery end to end: a client registers a Subscription over the FHIR API, writes
resources, and a real HTTP receiver on 127.0.0.1 gets the notifications the Backport IG
describes. Each test runs embedded (SQLite, in-process bus) and scaled out (PostgreSQL, Kafka).
"""

from __future__ import annotations

import asyncio
import uuid

from fhirstore.wire import ENCOUNTER_START
from tests.e2e.delivery.conftest import (
    HeraldFactory,
    event_numbers,
    notification_type,
    status_of,
    subscribe,
    subscription,
    wait_for_status,
)
from tests.support.receiver import http_receiver


def _patient_id() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"


async def test_handshake_activates_the_subscription(start_herald: HeraldFactory) -> None:
    async with http_receiver() as receiver, start_herald() as (_, client):
        made = await client.post(
            "/Subscription",
            json=subscription(
                receiver.url,
                filters=("Observation?subject=Patient/x",),
                headers=("Authorization: Bearer s3cret",),
            ),
        )
        assert made.status_code == 201, made.text
        assert made.json()["status"] == "requested"
        [handshake] = await receiver.wait_for(1)
        await wait_for_status(client, made.json()["id"], "active")

    assert handshake.method == "POST"
    assert handshake.headers["content-type"].startswith("application/fhir+json")
    assert handshake.headers["authorization"] == "Bearer s3cret"
    assert notification_type(handshake.json) == "handshake"
    assert status_of(handshake.json)["subscription"]["reference"].endswith(made.json()["id"])


async def test_each_content_level_carries_what_the_ig_says(start_herald: HeraldFactory) -> None:
    pid = _patient_id()
    async with http_receiver() as receiver, start_herald() as (_, client):
        ids = {}
        for content in ("empty", "id-only", "full-resource"):
            sub = subscription(
                f"{receiver.url}/{content}", filters=(f"Patient?_id={pid}",), content=content
            )
            ids[content] = (await client.post("/Subscription", json=sub)).json()["id"]
        for sid in ids.values():
            await wait_for_status(client, sid, "active")
        put = await client.put(
            f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "female"}
        )
        assert put.status_code == 201
        await receiver.wait_for(6)

    by_path = {
        r.path.rsplit("/", 1)[-1]: r.json
        for r in receiver.requests
        if notification_type(r.json) == "event-notification"
    }
    empty, id_only, full = by_path["empty"], by_path["id-only"], by_path["full-resource"]
    assert len(empty["entry"]) == 1
    assert "focus" not in status_of(empty)["notificationEvent"][0]
    assert status_of(id_only)["notificationEvent"][0]["focus"]["reference"].endswith(
        f"Patient/{pid}/_history/1"  # the version the event is about (the PUT made it)
    )
    assert all("resource" not in e for e in id_only["entry"][1:])
    [patient] = [e["resource"] for e in full["entry"][1:]]
    assert patient["gender"] == "female" and patient["id"] == pid
    for bundle in (empty, id_only, full):
        assert bundle["type"] == "history"
        assert event_numbers(bundle) == [1]


async def test_filters_with_not_and_several_anded(start_herald: HeraldFactory) -> None:
    pid = _patient_id()
    async with http_receiver() as receiver, start_herald() as (_, client):
        sub = subscription(
            receiver.url,
            filters=(
                f"Observation?subject=Patient/{pid}",
                "Observation?status:not=preliminary",
                "Observation?code=http://loinc.org|8867-4",
            ),
        )
        await subscribe(client, sub)

        def obs(status: str, code: str, subject: str = pid) -> dict:
            return {
                "resourceType": "Observation",
                "status": status,
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/{subject}"},
            }

        wanted = await client.post("/Observation", json=obs("final", "8867-4"))
        for other in (
            obs("preliminary", "8867-4"),  # :not excludes it
            obs("final", "1234-5"),  # other code
            obs("final", "8867-4", subject="someone-else"),  # other patient
        ):
            assert (await client.post("/Observation", json=other)).status_code == 201
        last = await client.post("/Observation", json=obs("amended", "8867-4"))
        requests = await receiver.wait_for(3)
        await asyncio.sleep(0.5)  # anything wrongly matched would arrive by now

    events = [r.json for r in receiver.requests if notification_type(r.json) != "handshake"]
    assert [event_numbers(b) for b in events] == [[1], [2]]
    focus = [status_of(b)["notificationEvent"][0]["focus"]["reference"] for b in events]
    assert focus[0].endswith(f"Observation/{wanted.json()['id']}/_history/1")
    assert focus[1].endswith(f"Observation/{last.json()['id']}/_history/1")
    assert len(requests) == 3


async def test_encounter_start_fires_once_when_it_goes_in_progress(
    start_herald: HeraldFactory,
) -> None:
    pid = _patient_id()
    async with http_receiver() as receiver, start_herald() as (_, client):
        sub = subscription(receiver.url, topic=ENCOUNTER_START, filters=(f"patient=Patient/{pid}",))
        await subscribe(client, sub)
        encounter = {
            "resourceType": "Encounter",
            "id": f"e-{pid}",
            "status": "planned",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
        }
        url = f"/Encounter/{encounter['id']}"
        await client.put(url, json=encounter)  # planned: no
        await client.put(url, json={**encounter, "status": "in-progress"})  # starts: yes
        still = {**encounter, "status": "in-progress", "serviceType": {"text": "cardiology"}}
        await client.put(url, json=still)  # stays in progress: no
        await client.put(url, json={**encounter, "status": "finished"})  # no
        await receiver.wait_for(2)
        await asyncio.sleep(0.5)

    events = [r.json for r in receiver.requests if notification_type(r.json) != "handshake"]
    assert len(events) == 1
    assert event_numbers(events[0]) == [1]
