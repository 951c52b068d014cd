"""Scheduler tests run Herald with a frozen clock that the test moves: in the embedded shape
(SQLite, in-process bus) and, where it matters, scaled out (PostgreSQL, a real Kafka broker)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirstore.clock import FrozenClock
from fhirstore.wire import OCCURRENCE_SYSTEM
from herald.runtime import Runtime
from tests.support.databases import SHAPES, sqlite_url
from tests.support.herald import HeraldFactory, herald_factory, shape_factory
from tests.support.waiting import eventually

TIMEZONE = "http://hl7.org/fhir/StructureDefinition/timezone"
# Sweeps only when a test asks (`runtime.scheduler.sweep()`: its interval is longer than any
# test moves the clock); wake-ups whenever a test moves the clock 0.1 s or more.
TEST_SCHEDULER = {"scheduler_sweep_seconds": 1e9, "scheduler_due_seconds": 0.1}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 3, 20, 6, 0, tzinfo=UTC))


@pytest.fixture
def embedded_herald(tmp_path: Path, clock: FrozenClock) -> HeraldFactory:
    return herald_factory(sqlite_url(tmp_path), clock=clock, **TEST_SCHEDULER)


@pytest.fixture(params=SHAPES)
def start_herald(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock
) -> HeraldFactory:
    """`async with start_herald(**settings) as (runtime, client)` in each shape."""
    return shape_factory(request, str(request.param), tmp_path, clock=clock, **TEST_SCHEDULER)


def patient(zone: str | None = "Europe/Berlin") -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "Chalmers"}]}
    if zone:
        body["extension"] = [{"url": TIMEZONE, "valueCode": zone}]
    return body


def timing_activity(repeat: dict[str, Any], *, text: str = "Blood pressure check") -> dict:
    return {
        "detail": {
            "status": "scheduled",
            "code": {"text": text},
            "description": text,
            "scheduledTiming": {"repeat": repeat},
        }
    }


def careplan(patient_id: str, *activities: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": "2026-03-20"},
        "activity": list(activities),
    }
    body.update(fields)
    return body


TWICE_DAILY = {
    "frequency": 2,
    "period": 1,
    "periodUnit": "d",
    "timeOfDay": ["08:00:00", "20:00:00"],
}
DAILY_0900 = {"frequency": 1, "period": 1, "periodUnit": "d", "timeOfDay": ["09:00:00"]}
# Its first 14 occurrences in Berlin from 2026-03-20 (summer time from the 29th).
BERLIN_0900 = [f"2026-03-{d:02d}T09:00:00+01:00" for d in range(20, 29)] + [
    f"2026-{m:02d}-{d:02d}T09:00:00+02:00" for m, d in [(3, 29), (3, 30), (3, 31), (4, 1), (4, 2)]
]


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/{body['resourceType']}", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def tasks_of(client: httpx.AsyncClient, careplan_id: str) -> list[dict[str, Any]]:
    """Every Task based on the CarePlan, by scheduled start."""
    response = await client.get(
        "/Task", params={"based-on": f"CarePlan/{careplan_id}", "_count": "1000"}
    )
    assert response.status_code == 200, response.text
    found = [e["resource"] for e in response.json().get("entry", [])]
    return sorted(found, key=lambda t: (t["executionPeriod"]["start"], t["id"]))


def starts(tasks: list[dict[str, Any]], status: str | None = None) -> list[str]:
    return [t["executionPeriod"]["start"] for t in tasks if status in (None, t["status"])]


def occurrence_ids(tasks: list[dict[str, Any]]) -> list[str]:
    return [
        i["value"]
        for t in tasks
        for i in t.get("identifier", [])
        if i["system"] == OCCURRENCE_SYSTEM
    ]


async def move_clock(runtime: Runtime, clock: FrozenClock, to: datetime) -> None:
    """Move the clock to `to` and return once the due wake-ups that this sets off are done."""
    clock.set(to)
    async with asyncio.timeout(30):
        await runtime.scheduler.wakeups.passed()


async def wait_for_tasks(
    client: httpx.AsyncClient, careplan_id: str, count: int, *, status: str | None = None
) -> list[dict[str, Any]]:
    """The CarePlan's Tasks once `count` of them (in `status`) exist."""
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal found
        found = await tasks_of(client, careplan_id)
        return len(starts(found, status)) == count

    await eventually(
        enough,
        within=30,
        what=lambda: f"expected {count} {status or ''} Tasks, have {starts(found, status)}",
    )
    return found
