"""CarePlan limits, tried as a hostile patient app would: a CarePlan that would make too many
Tasks, alone or with the patient's other CarePlans, or whose schedule cannot happen, is refused
with 422 naming the limit (or the activity), nothing is stored and no Task is made; one just
under a limit is stored and materialised. Counting reads the scheduler's bookkeeping and the
store in SQL, so the per-patient cases run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest

from fhirstore.clock import FrozenClock, SystemClock
from herald.runtime import Runtime, schedule_policy
from scheduler.policy import ScheduleLimits
from scheduler.service import Scheduler
from tests.scheduler.conftest import (
    DAILY_0900,
    TEST_SCHEDULER,
    careplan,
    create,
    patient,
    tasks_of,
    timing_activity,
    wait_for_tasks,
)
from tests.support.herald import HeraldFactory, herald_factory, running_herald, stored_counts
from tests.support.tokens import jwt_settings, live_bearer

Start = HeraldFactory
EVERY_MINUTE = {"frequency": 1, "period": 1, "periodUnit": "min"}
DAILY_1800 = {**DAILY_0900, "timeOfDay": ["18:00:00"]}


@pytest.fixture
def start(database_url: str, clock: FrozenClock) -> Start:
    """`async with start(**settings) as (runtime, client)`: Herald on either database (the
    in-process bus: the limits are the store's and the scheduler's, not the bus's)."""
    return herald_factory(database_url, clock=clock, **TEST_SCHEDULER)


async def _refused(
    runtime: Runtime, client: httpx.AsyncClient, body: dict[str, Any], *names: str
) -> dict[str, Any]:
    """POST `body`: 422 whose message names each of `names`, nothing stored, and the service
    still answering."""
    before = await stored_counts(runtime)
    answer = await client.post("/CarePlan", json=body)
    assert answer.status_code == 422, answer.text
    issue = answer.json()["issue"][0]
    for name in names:
        assert name in issue["diagnostics"], issue
    assert await stored_counts(runtime) == before
    async with asyncio.timeout(5):
        assert (await client.get("/metadata")).status_code == 200
    return issue


async def test_sixty_activities_every_minute_are_refused_and_make_no_task(
    embedded_herald: Start,
) -> None:
    async with embedded_herald() as (runtime, client):
        who = (await create(client, patient()))["id"]
        activities = [timing_activity(EVERY_MINUTE, text=f"Tap {i}") for i in range(60)]
        hostile = careplan(who, *activities)
        async with asyncio.timeout(30):  # counting stops at the limit: no hang either
            issue = await _refused(runtime, client, hostile, "HERALD_LIMIT_CAREPLAN_TASKS", "2000")
        assert issue["expression"] == ["CarePlan.activity"]
        await runtime.scheduler.sweep()
        found = await client.get("/Task")
        assert found.status_code == 200 and not found.json().get("entry")


async def test_an_activity_every_minute_for_years_is_refused_quickly(
    embedded_herald: Start,
) -> None:
    # One activity; counting it all would be millions of occurrences.
    async with embedded_herald() as (runtime, client):
        who = (await create(client, patient()))["id"]
        years = {**EVERY_MINUTE, "boundsPeriod": {"start": "2026-03-01", "end": "2036-03-01"}}
        async with asyncio.timeout(10):
            await _refused(
                runtime, client, careplan(who, timing_activity(years)), "LIMIT_CAREPLAN_TASKS"
            )


async def test_too_many_activities_are_refused_naming_the_limit(embedded_herald: Start) -> None:
    async with embedded_herald(limit_careplan_activities=5) as (runtime, client):
        who = (await create(client, patient()))["id"]
        six = [timing_activity(DAILY_0900, text=f"Check {i}") for i in range(6)]
        # Also a draft: the limit is on the CarePlan, scheduled or not.
        body = careplan(who, *six, status="draft")
        await _refused(runtime, client, body, "HERALD_LIMIT_CAREPLAN_ACTIVITIES", "6")
        await create(client, careplan(who, *six[:5]))


async def test_a_careplan_just_under_the_limit_is_stored_and_materialised(
    embedded_herald: Start,
) -> None:
    # Daily at 09:00 from the 20th: 14 occurrences in the 14-day horizon.
    async with embedded_herald(limit_careplan_tasks=14) as (runtime, client):
        who = (await create(client, patient()))["id"]
        plan = await create(client, careplan(who, timing_activity(DAILY_0900)))
        assert len(await wait_for_tasks(client, plan["id"], 14)) == 14
        twice = careplan(who, timing_activity(DAILY_0900), timing_activity(DAILY_1800))
        await _refused(runtime, client, twice, "at most 14", "HERALD_LIMIT_CAREPLAN_TASKS")
        # Its update is checked the same way, and refused leaves the stored one as it was.
        twice["id"] = plan["id"]
        answer = await client.put(f"/CarePlan/{plan['id']}", json=twice)
        assert answer.status_code == 422, answer.text
        assert (await client.get(f"/CarePlan/{plan['id']}")).json()["meta"]["versionId"] == "1"


async def test_the_patient_limit_counts_the_patients_other_careplans(start: Start) -> None:
    async with start(limit_patient_tasks=20) as (runtime, client):
        who = (await create(client, patient()))["id"]
        other = (await create(client, patient()))["id"]
        first = await create(client, careplan(who, timing_activity(DAILY_0900)))
        await wait_for_tasks(client, first["id"], 14)
        second = careplan(who, timing_activity(DAILY_1800))
        await _refused(runtime, client, second, "HERALD_LIMIT_PATIENT_TASKS", "at most 20")
        # Another patient is not affected, and the first CarePlan may still change.
        await create(client, careplan(other, timing_activity(DAILY_1800)))
        first["note"] = [{"text": "Sit for five minutes first"}]
        assert (await client.put(f"/CarePlan/{first['id']}", json=first)).status_code == 200


async def test_the_patient_limit_counts_careplans_not_yet_scheduled(start: Start) -> None:
    # No scheduler here: the first CarePlan is counted from its body, not from its Tasks.
    async with start(limit_patient_tasks=20, scheduler=False) as (runtime, client):
        who = (await create(client, patient()))["id"]
        first = await create(client, careplan(who, timing_activity(DAILY_0900)))
        second = careplan(who, timing_activity(DAILY_1800))
        await _refused(runtime, client, second, "HERALD_LIMIT_PATIENT_TASKS")
        # Once the first is no longer active, the second fits.
        first["status"] = "completed"
        assert (await client.put(f"/CarePlan/{first['id']}", json=first)).status_code == 200
        await create(client, second)


IMPOSSIBLE = {
    "bounds end before start": {
        **DAILY_0900,
        "boundsPeriod": {"start": "2026-04-01", "end": "2026-03-01"},
    },
    "more often than every minute": {"frequency": 100, "period": 1, "periodUnit": "min"},
    "frequency disagrees with timeOfDay": {**DAILY_0900, "frequency": 3},
    "period of zero": {"frequency": 1, "period": 0, "periodUnit": "d"},
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE))
async def test_an_impossible_schedule_is_refused_naming_the_activity(
    embedded_herald: Start, case: str
) -> None:
    async with embedded_herald() as (runtime, client):
        who = (await create(client, patient()))["id"]
        body = careplan(who, timing_activity(DAILY_0900), timing_activity(IMPOSSIBLE[case]))
        issue = await _refused(runtime, client, body, "CarePlan.activity[1].detail")
        assert issue["expression"] == ["CarePlan.activity[1].detail"]


async def test_a_schedule_herald_does_not_read_is_stored_and_reported(
    embedded_herald: Start,
) -> None:
    async with embedded_herald() as (_, client):
        who = (await create(client, patient()))["id"]
        body = careplan(who, timing_activity(DAILY_0900))
        body["activity"].append({"detail": {"status": "scheduled", "scheduledString": "daily"}})
        plan = await create(client, body)
        await wait_for_tasks(client, plan["id"], 14)
        report = (await client.get(f"/CarePlan/{plan['id']}/$schedule")).json()
        [skipped] = [p for p in report["parameter"] if p["name"] == "skipped"]
        assert "free text" in skipped["part"][1]["valueString"]


async def test_a_careplan_over_a_lowered_limit_keeps_its_earliest_tasks(
    embedded_herald: Start,
) -> None:
    """Stored under a higher limit: the scheduler never crashes nor writes without bound; it
    keeps the earliest Tasks within the limit and says why in `$schedule`."""
    async with embedded_herald() as (runtime, client):
        who = (await create(client, patient()))["id"]
        plan = await create(client, careplan(who, timing_activity(DAILY_0900)))
        made = await wait_for_tasks(client, plan["id"], 14)
        lowered = replace(
            schedule_policy(runtime.settings),
            limits=ScheduleLimits(tasks_per_careplan=5),
        )
        await Scheduler(runtime.store, runtime.bus, lowered).sweep()
        tasks = await tasks_of(client, plan["id"])
        live = [t for t in tasks if t["status"] != "cancelled"]
        assert [t["id"] for t in live] == [t["id"] for t in made[:5]]
        report = (await client.get(f"/CarePlan/{plan['id']}/$schedule")).json()
        reasons = _reasons(report)
        assert any("at most 5 Tasks" in r and "HERALD_LIMIT_CAREPLAN_TASKS" in r for r in reasons)


async def test_careplans_sent_all_at_once_stop_at_the_patient_limit(start: Start) -> None:
    async with start(limit_patient_tasks=30) as (_, client):
        who = (await create(client, patient()))["id"]
        bodies = [careplan(who, timing_activity(DAILY_0900, text=f"Dose {i}")) for i in range(6)]
        answers = await asyncio.gather(*(client.post("/CarePlan", json=b) for b in bodies))
        assert sorted(a.status_code for a in answers) == [201, 201, 422, 422, 422, 422]
        made = [a.json()["id"] for a in answers if a.status_code == 201]
        for careplan_id in made:
            await wait_for_tasks(client, careplan_id, 14)


def _reasons(report: dict[str, Any]) -> list[str]:
    return [
        p["valueString"]
        for s in report["parameter"]
        if s["name"] == "skipped"
        for p in s["part"]
        if p["name"] == "reason"
    ]


async def test_the_horizon_rolling_never_takes_a_patient_past_the_limit(
    embedded_herald: Start, clock: FrozenClock
) -> None:
    """Both fit when written (the second starts after the horizon); a week later they would
    not: the sweep keeps the patient within the limit and `$schedule` says why."""
    async with embedded_herald(limit_patient_tasks=20) as (runtime, client):
        who = (await create(client, patient()))["id"]
        first = await create(client, careplan(who, timing_activity(DAILY_0900)))
        later = careplan(who, timing_activity(DAILY_1800), period={"start": "2026-04-05"})
        second = await create(client, later)
        await wait_for_tasks(client, first["id"], 14)
        clock.advance(timedelta(days=8))
        await runtime.scheduler.sweep()
        wanted, reasons = 0, []
        for plan in (first, second):
            report = (await client.get(f"/CarePlan/{plan['id']}/$schedule")).json()
            [tasks] = [p["valueInteger"] for p in report["parameter"] if p["name"] == "tasks"]
            wanted += tasks
            reasons += _reasons(report)
        assert wanted == 20
        assert any("HERALD_LIMIT_PATIENT_TASKS" in r for r in reasons), reasons


async def test_a_patient_app_with_its_own_token_is_refused_the_same_way(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = live_bearer(sub="app-user", scope="launch/patient patient/CarePlan.cruds", patient="p1")
    async with running_herald(
        f"sqlite+aiosqlite:///{tmp_path}/herald.db",
        clock=SystemClock(),
        **jwt_settings(tmp_path),
        **TEST_SCHEDULER,
    ) as (runtime, client):
        admin = live_bearer(sub="admin-1")
        assert (
            await client.put("/Patient/p1", json={**patient(), "id": "p1"}, headers=admin)
        ).is_success
        activities = [timing_activity(EVERY_MINUTE, text=f"Tap {i}") for i in range(60)]
        before = await stored_counts(runtime)
        answer = await client.post("/CarePlan", json=careplan("p1", *activities), headers=app)
        assert answer.status_code == 422, answer.text
        assert "HERALD_LIMIT_CAREPLAN_TASKS" in answer.json()["issue"][0]["diagnostics"]
        assert await stored_counts(runtime) == before
        fine = careplan("p1", timing_activity(DAILY_0900))
        assert (await client.post("/CarePlan", json=fine, headers=app)).status_code == 201


async def test_counts_that_began_long_ago_are_refused_without_walking_them_all(
    embedded_herald: Start,
) -> None:
    # 100 activities, each every minute 100,000 times from January: Herald would walk each
    # count from its start to see whether it still runs; it stops at its budget instead.
    long_ago = {**EVERY_MINUTE, "count": 100000, "boundsPeriod": {"start": "2026-01-01"}}
    async with embedded_herald() as (runtime, client):
        who = (await create(client, patient()))["id"]
        body = careplan(who, *[timing_activity(long_ago, text=f"Tap {i}") for i in range(100)])
        async with asyncio.timeout(20):
            await _refused(runtime, client, body, "too long to evaluate", "smaller count")
