"""CarePlan -> Tasks through the running service (embedded shape): what a patient's app sees.

The clock is frozen at 2026-03-20 06:00 UTC (07:00 in Berlin) and moved by the tests. The
patient lives in Europe/Berlin, which moves its clocks forward on 2026-03-29.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from fhirstore.clock import FrozenClock
from fhirstore.wire import BUSINESS_STATUS, OCCURRENCE_SYSTEM
from scheduler.repairs import Repairs
from tests.scheduler.conftest import (
    BERLIN_0900,
    DAILY_0900,
    HeraldFactory,
    careplan,
    create,
    move_clock,
    patient,
    starts,
    tasks_of,
    timing_activity,
    wait_for_tasks,
)
from tests.support.waiting import eventually


async def daily_plan(client: httpx.AsyncClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A new patient in Berlin with a daily 09:00 CarePlan, and its 14 Tasks once made."""
    pid = (await create(client, patient()))["id"]
    plan = await create(client, careplan(pid, timing_activity(DAILY_0900)))
    return plan, await wait_for_tasks(client, plan["id"], 14)


async def test_an_active_careplan_gets_one_requested_task_per_occurrence_in_the_horizon(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_runtime, client):
        pid = (await create(client, patient()))["id"]
        plan = await create(client, careplan(pid, timing_activity(DAILY_0900)))
        tasks = await wait_for_tasks(client, plan["id"], 14)

        # 09:00 in Berlin every day, before and after the clocks go forward on the 29th
        assert starts(tasks) == BERLIN_0900
        first = tasks[0]
        assert first["status"] == "requested"
        assert first["intent"] == "order"
        assert first["basedOn"] == [{"reference": f"CarePlan/{plan['id']}"}]
        assert first["for"] == {"reference": f"Patient/{pid}"}
        assert first["description"] == "Blood pressure check"
        assert first["code"] == {"text": "Blood pressure check"}
        assert first["identifier"] == [
            {
                "system": OCCURRENCE_SYSTEM,
                "value": f"CarePlan/{plan['id']}/activity/#0/2026-03-20T08:00:00Z",
            }
        ]
        # the patient's app finds them by patient
        by_patient = await client.get("/Task", params={"patient": f"Patient/{pid}"})
        assert by_patient.json()["total"] == 14


async def test_a_task_becomes_ready_at_its_time_and_missed_after_the_grace_period(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald(scheduler_grace_hours=2) as (runtime, client):
        plan, _ = await daily_plan(client)

        # 08:59:59 in Berlin
        await move_clock(runtime, clock, datetime(2026, 3, 20, 7, 59, 59, tzinfo=UTC))
        assert starts(await tasks_of(client, plan["id"]), "ready") == []

        await move_clock(runtime, clock, datetime(2026, 3, 20, 8, 0, tzinfo=UTC))  # 09:00
        ready = await tasks_of(client, plan["id"])
        assert starts(ready, "ready") == ["2026-03-20T09:00:00+01:00"]

        # grace (2 h) is over
        await move_clock(runtime, clock, datetime(2026, 3, 20, 10, 0, 1, tzinfo=UTC))
        tasks = await tasks_of(client, plan["id"])
        assert starts(tasks, "cancelled") == ["2026-03-20T09:00:00+01:00"]
        missed = tasks[0]
        assert missed["businessStatus"]["coding"] == [{"system": BUSINESS_STATUS, "code": "missed"}]
        assert missed["statusReason"]["text"]
        assert starts(tasks, "requested") == BERLIN_0900[1:]


async def test_tasks_someone_moved_on_are_never_touched(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald(scheduler_grace_hours=1) as (runtime, client):
        plan, (first, second, *_) = await daily_plan(client)
        for task, status in ((first, "in-progress"), (second, "completed")):
            task = {**task, "status": status}
            put = await client.put(f"/Task/{task['id']}", json=task)
            assert put.status_code == 200, put.text

        clock.set(datetime(2026, 3, 21, 12, 0, tzinfo=UTC))  # both past their time and grace
        await runtime.scheduler.due.wake()
        await runtime.scheduler.sweep()
        tasks = {t["id"]: t for t in await tasks_of(client, plan["id"])}
        assert tasks[first["id"]]["status"] == "in-progress"
        assert tasks[first["id"]]["meta"]["versionId"] == "2"
        assert tasks[second["id"]]["status"] == "completed"
        assert tasks[second["id"]]["meta"]["versionId"] == "2"


async def test_a_lead_time_makes_tasks_ready_earlier(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald(scheduler_lead_minutes=30) as (runtime, client):
        plan, _ = await daily_plan(client)
        await move_clock(runtime, clock, datetime(2026, 3, 20, 7, 29, 59, tzinfo=UTC))
        assert starts(await tasks_of(client, plan["id"]), "ready") == []
        await move_clock(runtime, clock, datetime(2026, 3, 20, 7, 30, tzinfo=UTC))  # 08:30
        ready = await tasks_of(client, plan["id"])
        assert starts(ready, "ready") == ["2026-03-20T09:00:00+01:00"]


async def test_a_changed_schedule_replaces_future_requested_tasks_and_keeps_the_past(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        plan, _ = await daily_plan(client)
        # 11:00: today's 09:00 is ready
        await move_clock(runtime, clock, datetime(2026, 3, 20, 10, 0, tzinfo=UTC))
        assert len(starts(await tasks_of(client, plan["id"]), "ready")) == 1

        evening = copy.deepcopy(plan)
        evening["activity"][0]["detail"]["scheduledTiming"]["repeat"]["timeOfDay"] = ["20:00:00"]
        assert (await client.put(f"/CarePlan/{plan['id']}", json=evening)).status_code == 200
        # Today's one dose went out at 09:00: the evening ones start tomorrow (one a day).
        tasks = await wait_for_tasks(client, plan["id"], 13, status="cancelled")

        assert len(starts(tasks, "requested")) == 13
        assert starts(tasks, "ready") == ["2026-03-20T09:00:00+01:00"]  # the past stays
        assert starts(tasks, "requested")[0] == "2026-03-21T20:00:00+01:00"
        assert all(
            s.endswith("T20:00:00+01:00") or s.endswith("T20:00:00+02:00")
            for s in starts(tasks, "requested")
        )
        cancelled = [t for t in tasks if t["status"] == "cancelled"]
        assert starts(cancelled) == BERLIN_0900[1:]
        assert {c["businessStatus"]["coding"][0]["code"] for c in cancelled} == {"unscheduled"}

        # back to 09:00: the cancelled Tasks come back (same ids), the evening ones go
        morning = copy.deepcopy(plan)
        assert (await client.put(f"/CarePlan/{plan['id']}", json=morning)).status_code == 200
        tasks = await wait_for_tasks(client, plan["id"], 14, status="requested")
        # the horizon moved on with the clock: April 3rd is new
        assert starts(tasks, "requested") == [*BERLIN_0900[1:], "2026-04-03T09:00:00+02:00"]
        revived = {t["id"] for t in tasks if t["status"] == "requested"}
        assert {c["id"] for c in cancelled} < revived
        assert all("T20:00:00" in s for s in starts(tasks, "cancelled"))  # the evening ones
        assert (await runtime.scheduler.sweep()).writes == 0  # nothing left to fix


async def test_revoked_and_deleted_careplans_cancel_their_future_tasks(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        pid = (await create(client, patient()))["id"]
        revoked = await create(client, careplan(pid, timing_activity(DAILY_0900)))
        deleted = await create(client, careplan(pid, timing_activity(DAILY_0900)))
        await wait_for_tasks(client, revoked["id"], 14)
        await wait_for_tasks(client, deleted["id"], 14)
        await move_clock(runtime, clock, datetime(2026, 3, 20, 10, 0, tzinfo=UTC))
        for plan in (revoked, deleted):
            ready = await tasks_of(client, plan["id"])
            assert starts(ready, "ready") == ["2026-03-20T09:00:00+01:00"]

        put = await client.put(f"/CarePlan/{revoked['id']}", json={**revoked, "status": "revoked"})
        assert put.status_code == 200
        assert (await client.delete(f"/CarePlan/{deleted['id']}")).status_code in (200, 204)
        for plan in (revoked, deleted):
            tasks = await wait_for_tasks(client, plan["id"], 13, status="cancelled")
            assert starts(tasks, "ready") == ["2026-03-20T09:00:00+01:00"]  # history stays


async def test_careplans_that_are_not_active_plans_get_no_tasks(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_runtime, client):
        pid = (await create(client, patient()))["id"]
        draft = await create(client, careplan(pid, timing_activity(DAILY_0900), status="draft"))
        proposal = await create(
            client, careplan(pid, timing_activity(DAILY_0900), intent="proposal")
        )
        marker = await create(client, careplan(pid, timing_activity(DAILY_0900)))
        await wait_for_tasks(client, marker["id"], 14)  # the stream got this far
        for plan in (draft, proposal):
            assert await tasks_of(client, plan["id"]) == []
        report = await client.get(f"/CarePlan/{proposal['id']}/$schedule")
        assert report.status_code == 200, report.text
        text = str(report.json())
        assert "proposal" in text


async def test_a_missed_change_event_and_hand_edits_are_repaired_by_the_sweep(
    embedded_herald: HeraldFactory, clock: FrozenClock, monkeypatch
) -> None:
    async with embedded_herald() as (runtime, client):
        kept, tasks = await daily_plan(client)
        pid = kept["subject"]["reference"].removeprefix("Patient/")

        async def dropped(_ids: object, **_options: object) -> Repairs:  # the event never arrives
            return Repairs()

        monkeypatch.setattr(runtime.scheduler.reconciler, "reconcile", dropped)
        lost = await create(client, careplan(pid, timing_activity(DAILY_0900)))
        # a Task deleted by hand, one edited by hand, a duplicate made by hand
        assert (await client.delete(f"/Task/{tasks[3]['id']}")).status_code in (200, 204)
        edited = {**tasks[4], "executionPeriod": {"start": "2026-03-24T11:00:00+01:00"}}
        assert (await client.put(f"/Task/{edited['id']}", json=edited)).status_code == 200
        copy_of = {k: v for k, v in tasks[5].items() if k not in ("id", "meta")}
        duplicate = await create(client, copy_of)
        monkeypatch.undo()

        repairs = await runtime.scheduler.sweep()
        assert repairs.created == 14  # the CarePlan whose change never arrived
        assert repairs.changed_plans == 1
        assert repairs.restored == 2
        assert repairs.duplicates == 1
        assert starts(await tasks_of(client, lost["id"])) == BERLIN_0900
        repaired = await tasks_of(client, kept["id"])
        assert starts(repaired, "requested") == BERLIN_0900
        cancelled = [t for t in repaired if t["status"] == "cancelled"]
        assert [t["id"] for t in cancelled] == [duplicate["id"]]
        assert cancelled[0]["businessStatus"]["coding"][0]["code"] == "duplicate"

        again = await runtime.scheduler.sweep()
        assert again.writes == 0 and again.changed_plans == 0


async def test_a_clock_jump_is_caught_up(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald(scheduler_grace_hours=2) as (runtime, client):
        plan, _ = await daily_plan(client)

        clock.advance(timedelta(days=3))  # 2026-03-23 06:00 UTC
        await runtime.scheduler.due.wake()
        await runtime.scheduler.sweep()
        tasks = await tasks_of(client, plan["id"])
        assert len(starts(tasks, "cancelled")) == 3  # 20th, 21st, 22nd: missed
        assert starts(tasks, "requested") == BERLIN_0900[3:] + [
            f"2026-04-{d:02d}T09:00:00+02:00" for d in (3, 4, 5)
        ]


async def test_a_changed_careplan_leaves_tasks_whose_time_has_come_as_they_were(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        plan, _ = await daily_plan(client)
        # 13:00: today's Task is ready
        await move_clock(runtime, clock, datetime(2026, 3, 20, 12, 0, tzinfo=UTC))
        assert len(starts(await tasks_of(client, plan["id"]), "ready")) == 1
        changed = copy.deepcopy(plan)
        changed["activity"][0]["detail"]["description"] = "Blood pressure, both arms"
        assert (await client.put(f"/CarePlan/{plan['id']}", json=changed)).status_code == 200

        async def rewritten() -> bool:
            tasks = await tasks_of(client, plan["id"])
            return tasks[1]["description"] == "Blood pressure, both arms"

        await eventually(rewritten, within=30, what=lambda: "future Tasks were not updated")
        today = (await tasks_of(client, plan["id"]))[0]
        assert today["status"] == "ready"
        assert today["description"] == "Blood pressure check"  # history stays


async def test_activities_sharing_an_id_are_reported_not_merged(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_runtime, client):
        pid = (await create(client, patient()))["id"]
        insulin = {**timing_activity(DAILY_0900, text="Insulin"), "id": "dose"}
        aspirin = {**timing_activity(DAILY_0900, text="Aspirin"), "id": "dose"}
        plan = await create(client, careplan(pid, insulin, aspirin))
        tasks = await wait_for_tasks(client, plan["id"], 14)
        assert {t["description"] for t in tasks} == {"Insulin"}
        report = (await client.get(f"/CarePlan/{plan['id']}/$schedule")).json()
        skipped = [p for p in report["parameter"] if p["name"] == "skipped"]
        assert len(skipped) == 1
        assert "repeats an earlier activity's id" in skipped[0]["part"][1]["valueString"]


async def test_a_patient_moving_time_zone_moves_their_future_tasks(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_runtime, client):
        plan, _ = await daily_plan(client)
        pid = plan["subject"]["reference"].removeprefix("Patient/")
        moved = {**patient("America/New_York"), "id": pid}
        assert (await client.put(f"/Patient/{pid}", json=moved)).status_code == 200
        tasks = await wait_for_tasks(client, plan["id"], 14, status="cancelled")
        assert all(
            s.startswith("2026-") and "T09:00:00-04:00" in s for s in starts(tasks, "requested")
        )
