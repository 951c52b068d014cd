"""End to end, in both shapes: a MedicationRequest taken twice a day, a CarePlan pointing at it,
and the patient's app subscribed (REST hook, a real HTTP receiver on 127.0.0.1) to its ready
Tasks. Over two days the app hears of each dose once, at 08:00 and 20:00 in the patient's
zone, in order, each Task pointing at the MedicationRequest; never before its time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirstore.clock import FrozenClock
from fhirstore.wire import TASK_READY
from herald.runtime import Runtime
from tests.e2e.delivery.conftest import notification_type, status_of, subscription
from tests.support.databases import SHAPES
from tests.support.herald import HeraldFactory, shape_factory
from tests.support.receiver import Receiver, http_receiver
from tests.support.waiting import eventually

TIMEZONE = "http://hl7.org/fhir/StructureDefinition/timezone"
# Sweeps only when asked; wake-ups as soon as the clock moves.
SCHEDULER = {"scheduler_sweep_seconds": 1e9, "scheduler_due_seconds": 0.1}
# Europe/Berlin is UTC+1 until 2026-03-29: 08:00 and 20:00 there are 07:00 and 19:00 UTC.
DOSES = [
    "2026-03-20T08:00:00+01:00",
    "2026-03-20T20:00:00+01:00",
    "2026-03-21T08:00:00+01:00",
    "2026-03-21T20:00:00+01:00",
]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 3, 20, 6, 0, tzinfo=UTC))  # 07:00 in Berlin


@pytest.fixture(params=SHAPES)
def start_herald(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock
) -> HeraldFactory:
    return shape_factory(request, str(request.param), tmp_path, clock=clock, **SCHEDULER)


def metformin(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "medicationCodeableConcept": {"text": "Metformin 500 mg"},
        "dosageInstruction": [
            {
                "text": "one tablet with a meal",
                "timing": {
                    "repeat": {
                        "frequency": 2,
                        "period": 1,
                        "periodUnit": "d",
                        "timeOfDay": ["08:00:00", "20:00:00"],
                    }
                },
                "doseAndRate": [
                    {
                        "doseQuantity": {
                            "value": 1,
                            "unit": "tablet",
                            "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm",
                            "code": "TAB",
                        }
                    }
                ],
            }
        ],
    }


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/{body['resourceType']}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def heard(receiver: Receiver) -> list[dict[str, Any]]:
    """The resources of the event notifications the app received, in arrival order."""
    return [
        entry["resource"]
        for request in receiver.requests
        if request.json is not None and notification_type(request.json) == "event-notification"
        for entry in request.json["entry"][1:]
    ]


async def statuses(client: httpx.AsyncClient, careplan_id: str) -> dict[str, str]:
    """Task.status by executionPeriod.start, of the CarePlan's Tasks."""
    found = await client.get("/Task", params={"based-on": f"CarePlan/{careplan_id}", "_count": 100})
    assert found.status_code == 200, found.text
    tasks = [e["resource"] for e in found.json().get("entry", [])]
    return {t["executionPeriod"]["start"]: t["status"] for t in tasks}


async def move_clock(runtime: Runtime, clock: FrozenClock, to: datetime) -> None:
    """Move the clock to `to` and return once the wake-ups this sets off are done."""
    clock.set(to)
    async with asyncio.timeout(30):
        await runtime.scheduler.wakeups.passed()


async def test_a_patients_app_hears_of_each_dose_of_a_medication_plan_once_at_its_time(
    start_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with http_receiver() as receiver, start_herald() as (runtime, client):
        body = {
            "resourceType": "Patient",
            "extension": [{"url": TIMEZONE, "valueCode": "Europe/Berlin"}],
        }
        pid = (await create(client, body))["id"]
        filters = (f"Task?patient=Patient/{pid}",)
        sub = subscription(receiver.url, topic=TASK_READY, filters=filters, content="full-resource")
        await create(client, sub)
        await receiver.wait_for(1, timeout=60)  # the handshake
        request = await create(client, metformin(pid))
        plan = await create(
            client,
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "subject": {"reference": f"Patient/{pid}"},
                "period": {"start": "2026-03-20"},
                "activity": [{"reference": {"reference": f"MedicationRequest/{request['id']}"}}],
            },
        )

        async def planned() -> bool:
            return len(await statuses(client, plan["id"])) == 28  # twice a day, 14 days

        await eventually(planned, within=30, what=lambda: "the CarePlan's Tasks were not made")

        for index, dose in enumerate(DOSES):
            due = datetime.fromisoformat(dose).astimezone(UTC)
            await move_clock(runtime, clock, due - timedelta(minutes=1))  # 07:59 / 19:59
            assert (await statuses(client, plan["id"]))[dose] == "requested"
            assert len(heard(receiver)) == index  # nothing before its time

            await move_clock(runtime, clock, due)
            await receiver.wait_for(2 + index, timeout=30)
            task = heard(receiver)[index]
            [event] = status_of(receiver.requests[-1].json)["notificationEvent"]
            assert f"/Task/{task['id']}/_history/" in event["focus"]["reference"]
            assert task["resourceType"] == "Task"
            assert task["status"] == "ready"
            assert task["executionPeriod"]["start"] == dose
            assert task["focus"] == {"reference": f"MedicationRequest/{request['id']}"}
            assert task["description"] == "Metformin 500 mg: one tablet with a meal"

        # A Task the app's patient is given by hand: once it arrives, so has everything the
        # subscription had to send before it (notifications keep their order).
        await runtime.scheduler.sweep()
        sentinel = {
            "resourceType": "Task",
            "status": "ready",
            "intent": "order",
            "for": {"reference": f"Patient/{pid}"},
            "description": "Call the clinic",
        }
        await create(client, sentinel)
        await receiver.wait_for(2 + len(DOSES), timeout=30)
        tasks = heard(receiver)
        assert [t.get("executionPeriod", {}).get("start") for t in tasks] == [*DOSES, None]
        assert tasks[-1]["description"] == "Call the clinic"
        event_numbers = [
            int(event["eventNumber"])
            for request in receiver.requests
            if request.json is not None and notification_type(request.json) == "event-notification"
            for event in status_of(request.json)["notificationEvent"]
        ]
        assert event_numbers == sorted(set(event_numbers))  # no notification twice
