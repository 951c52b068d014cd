"""One reminder per occurrence: whatever changes (the patient's time zone, the schedule, a clock
jump), a patient never gets more `ready` reminders for a day than the schedule has occurrences
that day. A reminder's day is the date its `executionPeriod.start` names.

The clock starts at 2026-03-20 06:00 UTC (07:00 in Berlin, 02:00 in New York).
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from fhirstore.clock import FrozenClock
from herald.runtime import Runtime
from tests.scheduler.conftest import (
    TWICE_DAILY,
    HeraldFactory,
    careplan,
    create,
    patient,
    tasks_of,
    timing_activity,
    wait_for_tasks,
)
from tests.support.waiting import eventually


def fired(task: dict[str, Any]) -> bool:
    """Whether the Task went out as a reminder: ready now, or missed after being ready."""
    codes = {c.get("code") for c in (task.get("businessStatus") or {}).get("coding", [])}
    missed = task["status"] == "cancelled" and "missed" in codes
    return task["status"] in ("ready", "completed", "in-progress") or missed


def reminders_per_day(tasks: list[dict[str, Any]]) -> Counter[str]:
    return Counter(t["executionPeriod"]["start"][:10] for t in tasks if fired(t))


async def move_patient(
    client: httpx.AsyncClient, plan: dict[str, Any], zone: str, offset: str
) -> None:
    """Give the plan's patient `zone`, and return once its requested Tasks are at `offset`."""
    pid = plan["subject"]["reference"].removeprefix("Patient/")
    moved = {**patient(zone), "id": pid}
    assert (await client.put(f"/Patient/{pid}", json=moved)).status_code == 200
    found: list[dict[str, Any]] = []  # its requested Tasks of the week before summer time

    async def moved_on() -> bool:
        nonlocal found
        found = [t for t in await tasks_of(client, plan["id"]) if t["status"] == "requested"]
        week = [
            t["executionPeriod"]["start"]
            for t in found
            if t["executionPeriod"]["start"] < "2026-03-28"
        ]
        return bool(week) and all(start.endswith(offset) for start in week)

    await eventually(moved_on, within=30, what=lambda: f"still {found}")


async def run_day(runtime: Runtime, clock: FrozenClock, until: datetime) -> None:
    """Move the clock an hour at a time up to `until`, waking what falls due on the way."""
    while clock.now() < until:
        await step(runtime, clock, min(until, clock.now() + timedelta(hours=1)))


async def step(runtime: Runtime, clock: FrozenClock, to: datetime) -> None:
    """Move the clock to `to` and return once a wake-up pass begun after that is done. A loop
    that only went to sleep after the move waits from `to`: nudge the clock on until it runs."""
    clock.set(to)
    passed = asyncio.ensure_future(runtime.scheduler.wakeups.passed())
    async with asyncio.timeout(30):
        while not passed.done():
            await asyncio.wait({passed}, timeout=0.05)
            if not passed.done():
                clock.advance(timedelta(seconds=0.2))


async def twice_daily_plan(
    client: httpx.AsyncClient, zone: str = "Europe/Berlin"
) -> dict[str, Any]:
    pid = (await create(client, patient(zone)))["id"]
    plan = await create(client, careplan(pid, timing_activity(TWICE_DAILY, text="Lisinopril")))
    await wait_for_tasks(client, plan["id"], 28)
    return plan


async def test_moving_from_berlin_to_new_york_and_back_never_doubles_a_days_reminders(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        plan = await twice_daily_plan(client)
        await step(runtime, clock, datetime(2026, 3, 20, 7, 30, tzinfo=UTC))  # 08:30 Berlin
        morning = [t for t in await tasks_of(client, plan["id"]) if fired(t)]
        assert [t["executionPeriod"]["start"] for t in morning] == ["2026-03-20T08:00:00+01:00"]

        await move_patient(client, plan, "America/New_York", "-04:00")
        await run_day(runtime, clock, datetime(2026, 3, 21, 16, 0, tzinfo=UTC))  # 12:00 in NY
        tasks = await tasks_of(client, plan["id"])
        assert reminders_per_day(tasks) == {"2026-03-20": 2, "2026-03-21": 1}
        # The Berlin morning dose stands for that day's first slot; the evening one is New York's.
        assert [t["executionPeriod"]["start"] for t in tasks if fired(t)] == [
            "2026-03-20T08:00:00+01:00",
            "2026-03-20T20:00:00-04:00",
            "2026-03-21T08:00:00-04:00",
        ]

        await move_patient(client, plan, "Europe/Berlin", "+01:00")  # 17:00 in Berlin
        await run_day(runtime, clock, datetime(2026, 3, 22, 22, 0, tzinfo=UTC))
        days = reminders_per_day(await tasks_of(client, plan["id"]))
        assert days == {"2026-03-20": 2, "2026-03-21": 2, "2026-03-22": 2}
        assert await ever_ready_per_day(client, plan["id"]) == days


async def test_a_new_time_for_a_dose_that_already_went_out_brings_no_second_reminder(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        plan = await twice_daily_plan(client)
        await step(runtime, clock, datetime(2026, 3, 20, 7, 30, tzinfo=UTC))  # 08:30 Berlin
        later = copy.deepcopy(plan)
        later["activity"][0]["detail"]["scheduledTiming"]["repeat"]["timeOfDay"] = [
            "09:00:00",
            "20:00:00",
        ]
        assert (await client.put(f"/CarePlan/{plan['id']}", json=later)).status_code == 200
        await runtime.scheduler.sweep()
        await run_day(runtime, clock, datetime(2026, 3, 21, 22, 0, tzinfo=UTC))
        tasks = await tasks_of(client, plan["id"])
        assert reminders_per_day(tasks) == {"2026-03-20": 2, "2026-03-21": 2}
        assert [t["executionPeriod"]["start"][11:16] for t in tasks if fired(t)] == [
            "08:00",
            "20:00",
            "09:00",
            "20:00",
        ]


async def test_a_dose_moved_into_the_past_before_it_went_out_fires_once_at_once(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        plan = await twice_daily_plan(client, "America/New_York")
        # 11:00 UTC: 07:00 in New York, whose 08:00 dose has not gone out; 12:00 in Berlin.
        await step(runtime, clock, datetime(2026, 3, 20, 11, 0, tzinfo=UTC))
        assert not [t for t in await tasks_of(client, plan["id"]) if fired(t)]

        await move_patient(client, plan, "Europe/Berlin", "+01:00")
        await step(runtime, clock, datetime(2026, 3, 20, 11, 1, tzinfo=UTC))
        ready = [t for t in await tasks_of(client, plan["id"]) if fired(t)]
        assert [t["executionPeriod"]["start"] for t in ready] == ["2026-03-20T08:00:00+01:00"]

        await run_day(runtime, clock, datetime(2026, 3, 20, 22, 0, tzinfo=UTC))
        assert reminders_per_day(await tasks_of(client, plan["id"])) == {"2026-03-20": 2}


async def test_a_clock_set_forward_and_back_fires_each_dose_once(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        plan = await twice_daily_plan(client)
        await step(runtime, clock, datetime(2026, 3, 21, 20, 0, tzinfo=UTC))
        await runtime.scheduler.sweep()
        clock.set(datetime(2026, 3, 20, 8, 0, tzinfo=UTC))  # back a day and a half
        await runtime.scheduler.sweep()
        await step(runtime, clock, datetime(2026, 3, 21, 22, 0, tzinfo=UTC))
        await runtime.scheduler.sweep()
        days = reminders_per_day(await tasks_of(client, plan["id"]))
        assert days == {"2026-03-20": 2, "2026-03-21": 2}


async def ever_ready_per_day(client: httpx.AsyncClient, careplan_id: str) -> Counter[str]:
    """Per day, the Tasks that were ever `ready` (each one a `task-ready` notification), even
    if cancelled since."""
    days: Counter[str] = Counter()
    for task in await tasks_of(client, careplan_id):
        history = (await client.get(f"/Task/{task['id']}/_history")).json()
        if any(e["resource"].get("status") == "ready" for e in history.get("entry", [])):
            days[task["executionPeriod"]["start"][:10]] += 1
    return days


async def test_a_reminder_sent_early_by_the_lead_time_stands_when_the_zone_changes(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald(scheduler_lead_minutes=60) as (runtime, client):
        plan = await twice_daily_plan(client)
        await step(runtime, clock, datetime(2026, 3, 20, 6, 30, tzinfo=UTC))  # 07:30 Berlin
        ready = [t for t in await tasks_of(client, plan["id"]) if t["status"] == "ready"]
        assert [t["executionPeriod"]["start"] for t in ready] == ["2026-03-20T08:00:00+01:00"]

        await move_patient(client, plan, "America/New_York", "-04:00")
        await run_day(runtime, clock, datetime(2026, 3, 21, 5, 0, tzinfo=UTC))
        tasks = await tasks_of(client, plan["id"])
        assert [t["status"] for t in tasks if t["id"] == ready[0]["id"]] == ["ready"]
        assert await ever_ready_per_day(client, plan["id"]) == {"2026-03-20": 2}


async def test_a_longer_grace_period_brings_no_missed_reminder_back(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald(scheduler_grace_hours=2) as (runtime, client):
        plan = await twice_daily_plan(client)
        await run_day(runtime, clock, datetime(2026, 3, 20, 22, 0, tzinfo=UTC))
    async with embedded_herald(scheduler_grace_hours=48) as (runtime, client):
        await runtime.scheduler.sweep()
        await run_day(runtime, clock, datetime(2026, 3, 21, 1, 0, tzinfo=UTC))
        assert await ever_ready_per_day(client, plan["id"]) == {"2026-03-20": 2}


async def morning_plan_until_the_afternoon(
    runtime: Runtime, client: httpx.AsyncClient, clock: FrozenClock
) -> dict[str, Any]:
    """A daily 08:00 dose whose first reminder went out, with the clock at 14:00 Berlin."""
    pid = (await create(client, patient()))["id"]
    morning = {"frequency": 1, "period": 1, "periodUnit": "d", "timeOfDay": ["08:00:00"]}
    plan = await create(client, careplan(pid, timing_activity(morning, text="Lisinopril")))
    await wait_for_tasks(client, plan["id"], 14)
    await run_day(runtime, clock, datetime(2026, 3, 20, 13, 0, tzinfo=UTC))
    return plan


async def test_a_dose_added_later_in_the_day_goes_out_after_a_short_grace_period(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    """With a one-hour grace period the morning reminder (08:00) is outside the window by the
    afternoon. The morning dose then moves to 09:00 and an evening one at 20:00 is added: the
    08:00 reminder stands for the 09:00 dose (also past), not for the evening one, which goes
    out the same day."""
    async with embedded_herald(scheduler_grace_hours=1) as (runtime, client):
        plan = await morning_plan_until_the_afternoon(runtime, client, clock)
        later = copy.deepcopy(plan)
        later["activity"][0]["detail"]["scheduledTiming"]["repeat"] = {
            **TWICE_DAILY,
            "timeOfDay": ["09:00:00", "20:00:00"],
        }
        assert (await client.put(f"/CarePlan/{plan['id']}", json=later)).status_code == 200
        await runtime.scheduler.sweep()
        await run_day(runtime, clock, datetime(2026, 3, 21, 22, 0, tzinfo=UTC))
        tasks = await tasks_of(client, plan["id"])
        assert reminders_per_day(tasks) == {"2026-03-20": 2, "2026-03-21": 2}
        assert [t["executionPeriod"]["start"][11:16] for t in tasks if fired(t)] == [
            "08:00",
            "20:00",
            "09:00",
            "20:00",
        ]


async def test_a_dose_moved_to_the_evening_after_a_short_grace_period_goes_out_once(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    """With a one-hour grace period the 08:00 reminder is outside the window by the afternoon,
    when the dose moves to 20:00: it stands for that day's 20:00 (no second reminder), at the
    change and at every sweep after it."""
    async with embedded_herald(scheduler_grace_hours=1) as (runtime, client):
        plan = await morning_plan_until_the_afternoon(runtime, client, clock)
        later = copy.deepcopy(plan)
        later["activity"][0]["detail"]["scheduledTiming"]["repeat"]["timeOfDay"] = ["20:00:00"]
        assert (await client.put(f"/CarePlan/{plan['id']}", json=later)).status_code == 200
        await runtime.scheduler.sweep()
        await run_day(runtime, clock, datetime(2026, 3, 20, 18, 0, tzinfo=UTC))
        await runtime.scheduler.sweep()
        await run_day(runtime, clock, datetime(2026, 3, 21, 22, 0, tzinfo=UTC))
        tasks = await tasks_of(client, plan["id"])
        assert reminders_per_day(tasks) == {"2026-03-20": 1, "2026-03-21": 1}
        assert [t["executionPeriod"]["start"][11:16] for t in tasks if fired(t)] == [
            "08:00",
            "20:00",
        ]
