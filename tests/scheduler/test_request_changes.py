"""A change to the request a CarePlan activity refers to reschedules the CarePlan as a change to
the CarePlan does: a new timing moves the future Tasks, a request stopped, completed, entered in
error, deleted or for another patient cancels them (`unscheduled`), one stored after the
CarePlan brings its Tasks; and the sweep repairs a change whose event never arrived.

The clock is frozen at 2026-03-20 06:00 UTC (07:00 in Berlin); the horizon is 14 days.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from fhirstore.clock import FrozenClock
from herald.runtime import Runtime
from scheduler.repairs import Repairs
from tests.scheduler.conftest import (
    BERLIN_0900,
    DAILY_0900,
    TEST_SCHEDULER,
    TWICE_DAILY,
    HeraldFactory,
    careplan,
    create,
    move_clock,
    patient,
    starts,
    tasks_of,
    wait_for_tasks,
)
from tests.support.herald import herald_factory
from tests.support.waiting import eventually

# 09:30 in Berlin: the first 09:00 reminder went out.
AFTER_FIRST_DOSE = datetime(2026, 3, 20, 8, 30, tzinfo=UTC)
SETTLED = {**Repairs().counts(), "settled_plans": 1}  # left alone: not planned, nothing written


def medication_request(
    pid: str, *timings: dict[str, Any], dose: str = "one tablet", **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "Metformin 500 mg"},
        "subject": {"reference": f"Patient/{pid}"},
        "dosageInstruction": [{"text": dose, "timing": {"repeat": t}} for t in timings],
    }
    body.update(fields)
    return body


def refers_to(request_id: str, key: str = "metformin") -> dict[str, Any]:
    return {"id": key, "reference": {"reference": f"MedicationRequest/{request_id}"}}


def berlin(day: int, time: str, month: int = 3) -> str:
    """A local start in Berlin, 2026 (summer time from March 29th)."""
    offset = "+02:00" if (month, day) >= (3, 29) else "+01:00"
    return f"2026-{month:02d}-{day:02d}T{time}:00{offset}"


# Twice daily at 08:00 and 20:00 from 2026-03-20 08:00 in Berlin, 14 days.
DAYS = [(d, 3) for d in range(20, 32)] + [(1, 4), (2, 4)]
BERLIN_TWICE = [berlin(d, t, m) for d, m in DAYS for t in ("08:00", "20:00")]


async def referring_plan(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """A patient in Berlin, their daily 09:00 MedicationRequest and a CarePlan whose activity
    refers to it."""
    pid = (await create(client, patient()))["id"]
    request = await create(client, medication_request(pid, DAILY_0900))
    plan = await create(client, careplan(pid, refers_to(request["id"])))
    return request, plan


async def put(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.put(f"/{body['resourceType']}/{body['id']}", json=body)
    assert response.status_code in (200, 201), response.text


async def skipped_reasons(client: httpx.AsyncClient, careplan_id: str) -> list[str]:
    report = await client.get(f"/CarePlan/{careplan_id}/$schedule")
    assert report.status_code == 200, report.text
    return [
        part["valueString"]
        for p in report.json()["parameter"]
        if p["name"] == "skipped"
        for part in p["part"]
        if part["name"] == "reason"
    ]


async def first_dose_went_out(
    runtime: Runtime, client: httpx.AsyncClient, clock: FrozenClock, careplan_id: str
) -> None:
    await move_clock(runtime, clock, AFTER_FIRST_DOSE)
    assert starts(await tasks_of(client, careplan_id), "ready") == [BERLIN_0900[0]]


def twice_daily(request: dict[str, Any]) -> dict[str, Any]:
    timing = {"repeat": TWICE_DAILY}
    return {**request, "dosageInstruction": [{"text": "two tablets", "timing": timing}]}


async def test_a_new_timing_on_the_request_moves_the_future_tasks(
    start_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with start_herald() as (runtime, client):
        request, plan = await referring_plan(client)
        tasks = await wait_for_tasks(client, plan["id"], 14)
        assert starts(tasks) == BERLIN_0900
        focus = {"reference": f"MedicationRequest/{request['id']}"}
        assert all(t["focus"] == focus for t in tasks)
        assert {t["description"] for t in tasks} == {"Metformin 500 mg: one tablet"}
        await first_dose_went_out(runtime, client, clock, plan["id"])

        await put(client, twice_daily(request))
        tasks = await wait_for_tasks(client, plan["id"], 28, status="requested")
        # Today's 09:00 reminder went out and stands for today's 08:00, which gets none.
        assert starts(tasks, "requested") == [*BERLIN_TWICE[1:], berlin(3, "08:00", 4)]
        assert starts(tasks, "ready") == [BERLIN_0900[0]]
        assert starts(tasks, "cancelled") == BERLIN_0900[1:]
        cancelled = [t for t in tasks if t["status"] == "cancelled"]
        assert {t["businessStatus"]["coding"][0]["code"] for t in cancelled} == {"unscheduled"}
        ready = next(t for t in tasks if t["status"] == "ready")
        assert ready["description"] == "Metformin 500 mg: one tablet"  # it went out as it was
        new = [t for t in tasks if t["status"] == "requested"]
        assert {t["description"] for t in new} == {"Metformin 500 mg: two tablets"}
        going_out = starts(tasks, "ready") + starts(tasks, "requested")
        assert [s for s in going_out if s.startswith("2026-03-20")] == [
            berlin(20, "09:00"),
            berlin(20, "20:00"),
        ]  # two reminders today, as many as the new timing has doses


async def test_a_request_change_whose_event_never_arrived_is_repaired_by_the_next_sweep(
    start_herald: HeraldFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_herald() as (runtime, client):
        request, plan = await referring_plan(client)
        await wait_for_tasks(client, plan["id"], 14)
        unchanged = await runtime.scheduler.sweep()
        assert (unchanged.plans, unchanged.settled_plans) == (0, 1)

        heard = asyncio.Event()
        reconcile = runtime.scheduler.reconciler.reconcile

        async def deaf(ids: list[str], **options: Any) -> Repairs:  # the event is lost
            if plan["id"] in ids:
                heard.set()
                return Repairs()
            return await reconcile(ids, **options)

        monkeypatch.setattr(runtime.scheduler.reconciler, "reconcile", deaf)
        await put(client, twice_daily(request))
        async with asyncio.timeout(30):
            await heard.wait()
        monkeypatch.undo()
        assert starts(await tasks_of(client, plan["id"]), "requested") == BERLIN_0900

        repairs = await runtime.scheduler.sweep()  # not a full one
        assert (repairs.changed_plans, repairs.created, repairs.unscheduled) == (1, 28, 14)
        tasks = await tasks_of(client, plan["id"])
        assert starts(tasks, "requested") == BERLIN_TWICE
        assert starts(tasks, "cancelled") == BERLIN_0900
        assert (await runtime.scheduler.sweep()).counts() == SETTLED


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("stopped", "has status 'stopped'"),
        ("completed", "has status 'completed'"),
        ("entered-in-error", "has status 'entered-in-error'"),
        ("deleted", "which is not stored (or deleted)"),
    ],
)
async def test_a_request_that_ends_cancels_the_future_tasks(
    embedded_herald: HeraldFactory, clock: FrozenClock, change: str, reason: str
) -> None:
    async with embedded_herald() as (runtime, client):
        request, plan = await referring_plan(client)
        await wait_for_tasks(client, plan["id"], 14)
        await first_dose_went_out(runtime, client, clock, plan["id"])

        if change == "deleted":
            deleted = await client.delete(f"/MedicationRequest/{request['id']}")
            assert deleted.status_code in (200, 204), deleted.text
        else:
            await put(client, {**request, "status": change})
        tasks = await wait_for_tasks(client, plan["id"], 13, status="cancelled")
        assert starts(tasks, "cancelled") == BERLIN_0900[1:]
        cancelled = [t for t in tasks if t["status"] == "cancelled"]
        assert {t["businessStatus"]["coding"][0]["code"] for t in cancelled} == {"unscheduled"}
        assert starts(tasks, "ready") == [BERLIN_0900[0]]  # the reminder that went out stays
        assert starts(tasks, "requested") == []
        [said] = await skipped_reasons(client, plan["id"])
        assert f"MedicationRequest/{request['id']}" in said and reason in said


async def test_a_request_stored_after_its_careplan_brings_the_tasks(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_runtime, client):
        pid = (await create(client, patient()))["id"]
        request_id = f"later-{uuid.uuid4().hex[:8]}"
        plan = await create(client, careplan(pid, refers_to(request_id)))

        async def reported() -> bool:  # 404 until the scheduler has planned it
            report = await client.get(f"/CarePlan/{plan['id']}/$schedule")
            return report.status_code == 200 and "not stored" in report.text

        await eventually(reported, within=30, what=lambda: "the CarePlan was never planned")
        assert await tasks_of(client, plan["id"]) == []

        await put(client, {**medication_request(pid, DAILY_0900), "id": request_id})
        tasks = await wait_for_tasks(client, plan["id"], 14)
        assert starts(tasks) == BERLIN_0900
        assert await skipped_reasons(client, plan["id"]) == []


async def test_a_request_moved_to_another_patient_takes_its_tasks_away(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        request, plan = await referring_plan(client)
        await wait_for_tasks(client, plan["id"], 14)
        await first_dose_went_out(runtime, client, clock, plan["id"])
        other = (await create(client, patient()))["id"]

        await put(client, {**request, "subject": {"reference": f"Patient/{other}"}})
        tasks = await wait_for_tasks(client, plan["id"], 13, status="cancelled")
        assert starts(tasks, "requested") == []
        assert starts(tasks, "ready") == [BERLIN_0900[0]]
        [said] = await skipped_reasons(client, plan["id"])
        assert f"is for Patient/{other}, not the CarePlan's" in said


@pytest.fixture
def unheard_herald(database_url: str, clock: FrozenClock) -> HeraldFactory:
    """A Herald whose scheduler hears no change: only `runtime.scheduler.sweep()` reconciles
    (on SQLite and on PostgreSQL, since the sweep finds what it may skip in SQL)."""
    return herald_factory(database_url, clock=clock, **TEST_SCHEDULER, scheduler=False)


async def test_the_sweep_follows_a_request_through_changes_it_never_heard_of(
    unheard_herald: HeraldFactory,
) -> None:
    async with unheard_herald() as (runtime, client):
        sweep = runtime.scheduler.sweep
        pid = (await create(client, patient()))["id"]
        request_id = f"later-{uuid.uuid4().hex[:8]}"
        plan = await create(client, careplan(pid, refers_to(request_id)))
        assert ((await sweep()).plans, await tasks_of(client, plan["id"])) == (1, [])
        assert (await sweep()).counts() == SETTLED  # still not stored: nothing to do

        request = {**medication_request(pid, DAILY_0900), "id": request_id}
        await put(client, request)  # stored after the CarePlan
        assert (await sweep()).created == 14
        assert (await sweep()).counts() == SETTLED

        await put(client, twice_daily(request))  # a new timing
        repairs = await sweep()
        assert (repairs.changed_plans, repairs.created, repairs.unscheduled) == (1, 28, 14)
        assert starts(await tasks_of(client, plan["id"]), "requested") == BERLIN_TWICE
        assert (await sweep()).counts() == SETTLED

        deleted = await client.delete(f"/MedicationRequest/{request_id}")
        assert deleted.status_code in (200, 204), deleted.text
        assert (await sweep()).unscheduled == 28
        assert (await sweep()).counts() == SETTLED  # still deleted: nothing to do


async def test_each_dosage_instruction_gets_tasks_under_the_longest_activity_id(
    unheard_herald: HeraldFactory,
) -> None:
    """A second dosage instruction's Tasks are keyed `{activity id}/1`: longer than an id."""
    async with unheard_herald() as (runtime, client):
        pid = (await create(client, patient()))["id"]
        evening = {**DAILY_0900, "timeOfDay": ["21:00:00"]}
        request = await create(client, medication_request(pid, DAILY_0900, evening))
        plan = await create(client, careplan(pid, refers_to(request["id"], key="a" * 64)))
        assert (await runtime.scheduler.sweep()).created == 28
        tasks = await tasks_of(client, plan["id"])
        assert starts(tasks, "requested") == sorted(
            BERLIN_0900 + [s.replace("T09:", "T21:") for s in BERLIN_0900]
        )
        assert (await runtime.scheduler.sweep()).counts() == SETTLED


async def test_a_new_dose_at_the_same_times_rewrites_the_future_tasks(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        request, plan = await referring_plan(client)
        await wait_for_tasks(client, plan["id"], 14)
        await first_dose_went_out(runtime, client, clock, plan["id"])

        dosage = [{**request["dosageInstruction"][0], "text": "two tablets"}]
        await put(client, {**request, "dosageInstruction": dosage})

        async def rewritten() -> bool:
            tasks = await tasks_of(client, plan["id"])
            return all(t["description"].endswith("two tablets") for t in tasks[1:])

        await eventually(rewritten, within=30, what=lambda: "the future Tasks kept the old dose")
        tasks = await tasks_of(client, plan["id"])
        # The same Tasks, rewritten (and the horizon rolled on a day).
        assert starts(tasks, "requested") == [*BERLIN_0900[1:], berlin(3, "09:00", 4)]
        assert (await runtime.scheduler.sweep()).counts() == SETTLED
        assert tasks[0]["description"] == "Metformin 500 mg: one tablet"  # it went out so
