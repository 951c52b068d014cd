"""The sweep leaves CarePlans with nothing to do alone, and still repairs every kind of damage.

Herald here runs without a scheduler of its own (`scheduler=False`): no change event reaches
it and no due wake-up runs, so each test's sweep is the only repair, as if every change event
were lost. On SQLite and on PostgreSQL, since the sweep finds what it may skip in SQL. The clock
is frozen at 2026-03-20 06:00 UTC (07:00 in Berlin).
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from fhirstore.clock import FrozenClock
from fhirstore.db import statistics
from fhirstore.errors import PreconditionFailed
from herald.cli import app
from herald.runtime import Runtime, schedule_policy
from scheduler.repairs import Repairs
from scheduler.service import Scheduler
from tests.scheduler.conftest import (
    BERLIN_0900,
    DAILY_0900,
    TEST_SCHEDULER,
    HeraldFactory,
    careplan,
    create,
    patient,
    starts,
    tasks_of,
    timing_activity,
)
from tests.support.herald import herald_factory, running_herald

SETTLED = {**Repairs().counts(), "settled_plans": 1}  # left alone: not planned, nothing written


@pytest.fixture
def unheard_herald(database_url: str, clock: FrozenClock) -> HeraldFactory:
    """`async with unheard_herald() as (runtime, client)`: a Herald whose scheduler hears no
    change; only `runtime.scheduler.sweep()` reconciles (on either database)."""
    return herald_factory(database_url, clock=clock, **TEST_SCHEDULER, scheduler=False)


async def daily_plan(
    runtime: Runtime, client: httpx.AsyncClient
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A new patient in Berlin with a daily 09:00 CarePlan, materialised by a sweep."""
    pid = (await create(client, patient()))["id"]
    plan = await create(client, careplan(pid, timing_activity(DAILY_0900)))
    materialised = await runtime.scheduler.sweep()
    assert (materialised.plans, materialised.created) == (1, 14)
    return plan, await tasks_of(client, plan["id"])


async def june_plan(runtime: Runtime, client: httpx.AsyncClient) -> dict[str, Any]:
    """A new patient's daily 09:00 CarePlan from June 1st on, planned by a sweep: nothing to
    materialise, and nothing new to plan, until the horizon reaches June."""
    pid = (await create(client, patient()))["id"]
    june = timing_activity({**DAILY_0900, "boundsPeriod": {"start": "2026-06-01"}})
    plan = await create(client, careplan(pid, june))
    materialised = await runtime.scheduler.sweep()
    assert (materialised.plans, materialised.writes) == (1, 0)
    return plan


async def settles(runtime: Runtime) -> None:
    """Once repaired, the CarePlan has nothing to do: the next sweep leaves it alone."""
    assert (await runtime.scheduler.sweep()).counts() == SETTLED


async def test_a_careplan_with_nothing_to_do_is_not_planned_again(
    unheard_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with unheard_herald() as (runtime, client):
        plan, tasks = await daily_plan(runtime, client)
        await settles(runtime)
        clock.advance(timedelta(minutes=30))  # nothing falls due, the horizon reaches nothing new
        await settles(runtime)

        full = await runtime.scheduler.sweep(full=True)  # `herald scheduler reconcile --full`
        assert (full.plans, full.settled_plans, full.writes) == (1, 0, 0)
        assert await tasks_of(client, plan["id"]) == tasks  # not one Task written again


async def test_a_careplan_change_whose_event_never_arrived_is_repaired(
    unheard_herald: HeraldFactory,
) -> None:
    async with unheard_herald() as (runtime, client):
        plan, _ = await daily_plan(runtime, client)
        evening = copy.deepcopy(plan)
        evening["activity"][0]["detail"]["scheduledTiming"]["repeat"]["timeOfDay"] = ["20:00:00"]
        assert (await client.put(f"/CarePlan/{plan['id']}", json=evening)).status_code == 200

        repairs = await runtime.scheduler.sweep()
        assert (repairs.changed_plans, repairs.created, repairs.unscheduled) == (1, 14, 14)
        tasks = await tasks_of(client, plan["id"])
        assert [s[11:19] for s in starts(tasks, "requested")] == ["20:00:00"] * 14
        assert starts(tasks, "cancelled") == BERLIN_0900
        await settles(runtime)


async def test_a_patient_time_zone_change_whose_event_never_arrived_is_repaired(
    unheard_herald: HeraldFactory,
) -> None:
    async with unheard_herald() as (runtime, client):
        plan, _ = await daily_plan(runtime, client)
        pid = plan["subject"]["reference"].removeprefix("Patient/")
        moved = {**patient("America/New_York"), "id": pid}
        assert (await client.put(f"/Patient/{pid}", json=moved)).status_code == 200

        repairs = await runtime.scheduler.sweep()
        assert (repairs.changed_plans, repairs.created, repairs.unscheduled) == (1, 14, 14)
        requested = starts(await tasks_of(client, plan["id"]), "requested")
        assert len(requested) == 14
        assert all(s.endswith("T09:00:00-04:00") for s in requested)
        await settles(runtime)


async def test_a_task_edited_by_hand_is_restored(unheard_herald: HeraldFactory) -> None:
    async with unheard_herald() as (runtime, client):
        plan, tasks = await daily_plan(runtime, client)
        edited = {**tasks[2], "description": "Something else entirely"}
        assert (await client.put(f"/Task/{edited['id']}", json=edited)).status_code == 200

        repairs = await runtime.scheduler.sweep()
        assert (repairs.plans, repairs.restored, repairs.writes) == (1, 1, 1)
        restored = (await tasks_of(client, plan["id"]))[2]
        assert restored["description"] == "Blood pressure check"
        await settles(runtime)


async def test_a_task_deleted_by_hand_is_restored(unheard_herald: HeraldFactory) -> None:
    async with unheard_herald() as (runtime, client):
        plan, tasks = await daily_plan(runtime, client)
        assert (await client.delete(f"/Task/{tasks[5]['id']}")).status_code in (200, 204)

        repairs = await runtime.scheduler.sweep()
        assert (repairs.plans, repairs.restored, repairs.writes) == (1, 1, 1)
        assert starts(await tasks_of(client, plan["id"]), "requested") == BERLIN_0900
        await settles(runtime)


async def test_a_duplicate_task_made_by_hand_is_cancelled(unheard_herald: HeraldFactory) -> None:
    async with unheard_herald() as (runtime, client):
        plan, tasks = await daily_plan(runtime, client)
        duplicate = await create(
            client, {k: v for k, v in tasks[7].items() if k not in ("id", "meta")}
        )

        repairs = await runtime.scheduler.sweep()
        assert (repairs.plans, repairs.duplicates, repairs.writes) == (1, 1, 1)
        after = await tasks_of(client, plan["id"])
        cancelled = [t for t in after if t["status"] == "cancelled"]
        assert [t["id"] for t in cancelled] == [duplicate["id"]]
        assert cancelled[0]["businessStatus"]["coding"][0]["code"] == "duplicate"
        await settles(runtime)  # a cancelled duplicate needs nothing more


async def test_tasks_made_under_an_earlier_id_keep_standing_for_their_occurrences(
    unheard_herald: HeraldFactory,
) -> None:
    """A database from before Task ids named their CarePlan: its Tasks have other ids. The
    sweep keeps them (its rows say which Task stands for each occurrence): none is made again,
    none cancelled as a duplicate."""
    async with unheard_herald() as (runtime, client):
        plan, tasks = await daily_plan(runtime, client)
        old_ids = {t["id"]: str(uuid.uuid5(uuid.NAMESPACE_URL, t["id"])) for t in tasks}
        await _rename_tasks(runtime, old_ids)

        full = await runtime.scheduler.sweep(full=True)
        assert (full.plans, full.writes) == (1, 0)
        after = await tasks_of(client, plan["id"])
        assert sorted(t["id"] for t in after) == sorted(old_ids.values())
        assert starts(after, "requested") == BERLIN_0900


async def _rename_tasks(runtime: Runtime, new_ids: dict[str, str]) -> None:
    """Give Tasks other ids in every table, as if they had been made with them.

    It reads, then writes: on SQLite only a write transaction from the start (the store's)
    keeps another writer from committing in between and refusing the upgrade."""
    async with runtime.store.bookkeeping_transaction() as conn:
        for old, new in new_ids.items():
            key = {"old": old, "new": new}
            body = (
                await conn.execute(
                    text("SELECT body FROM resources WHERE res_type = 'Task' AND res_id = :old"),
                    key,
                )
            ).scalar_one()
            renamed = orjson.dumps({**orjson.loads(body), "id": new}).decode()
            for table in ("resources", "resource_versions"):
                await conn.execute(
                    text(
                        f"UPDATE {table} SET res_id = :new, body = :body "
                        "WHERE res_type = 'Task' AND res_id = :old"
                    ),
                    {**key, "body": renamed},
                )
            await conn.execute(
                text(
                    "UPDATE search_index SET res_id = :new "
                    "WHERE res_type = 'Task' AND res_id = :old"
                ),
                key,
            )
            await conn.execute(
                text("UPDATE schedule_tasks SET task_id = :new WHERE task_id = :old"), key
            )


async def test_a_task_still_requested_after_its_time_is_woken(
    unheard_herald: HeraldFactory, clock: FrozenClock
) -> None:
    # Ready 90 minutes ahead: at 06:45 UTC today's 09:00 (08:00 UTC) is due, and the horizon
    # (April 3rd 06:45 UTC) has not reached April 3rd's 09:00 (07:00 UTC, summer time).
    async with unheard_herald(scheduler_lead_minutes=90) as (runtime, client):
        plan, _ = await daily_plan(runtime, client)
        clock.set(datetime(2026, 3, 20, 6, 45, tzinfo=UTC))  # and no due wake-up ran

        repairs = await runtime.scheduler.sweep()
        assert (repairs.plans, repairs.woken, repairs.writes) == (1, 1, 1)
        assert starts(await tasks_of(client, plan["id"]), "ready") == BERLIN_0900[:1]
        await settles(runtime)


async def test_the_horizon_rolls_forward_when_the_clock_moves_a_day(
    unheard_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with unheard_herald() as (runtime, client):
        plan, _ = await daily_plan(runtime, client)
        clock.advance(timedelta(days=1))
        assert await runtime.scheduler.due.wake() == 1  # yesterday's 09:00: ready, not yet missed

        repairs = await runtime.scheduler.sweep()  # nothing due: only the horizon moved
        assert (repairs.plans, repairs.created, repairs.writes) == (1, 1, 1)
        tasks = await tasks_of(client, plan["id"])
        assert starts(tasks, "requested") == [*BERLIN_0900[1:], "2026-04-03T09:00:00+02:00"]
        await settles(runtime)


async def test_a_clock_set_back_plans_the_days_it_brought_back(
    unheard_herald: HeraldFactory, clock: FrozenClock
) -> None:
    # Planned at 06:00 on March 20th, from March 1st on: the days before the 19th (not yet
    # missed) were behind it. With the clock set back three days they are not, and the
    # schedule wants their Tasks.
    async with unheard_herald() as (runtime, client):
        pid = (await create(client, patient()))["id"]
        since_march = careplan(pid, timing_activity(DAILY_0900), period={"start": "2026-03-01"})
        plan = await create(client, since_march)
        assert (await runtime.scheduler.sweep()).created == 15
        clock.set(datetime(2026, 3, 17, 6, 0, tzinfo=UTC))

        repairs = await runtime.scheduler.sweep()
        assert (repairs.plans, repairs.created, repairs.writes) == (1, 3, 3)
        since_16th = [f"2026-03-{d}T09:00:00+01:00" for d in (16, 17, 18, 19)] + BERLIN_0900
        assert starts(await tasks_of(client, plan["id"])) == since_16th
        await settles(runtime)


async def test_a_clock_set_back_with_nothing_new_to_plan_settles_after_one_sweep(
    unheard_herald: HeraldFactory, clock: FrozenClock
) -> None:
    # Nothing until June: planning it again at an earlier time changes nothing on its row, but
    # the row must still say when it was planned, or it would be planned at every sweep until
    # the clock is back where it was.
    async with unheard_herald() as (runtime, client):
        await june_plan(runtime, client)
        clock.set(datetime(2026, 3, 17, 6, 0, tzinfo=UTC))

        repairs = await runtime.scheduler.sweep()
        assert (repairs.plans, repairs.writes) == (1, 0)
        await settles(runtime)


async def test_the_report_of_a_careplan_left_alone_stays_true(
    unheard_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with unheard_herald() as (runtime, client):
        plan = await june_plan(runtime, client)
        reported = await runtime.scheduler.skipped()
        assert [(i, activity) for i, activity, _ in reported] == [(plan["id"], "#0")]

        clock.advance(timedelta(days=2))
        await settles(runtime)  # not planned, so its report is the one from two days ago
        assert await runtime.scheduler.skipped() == reported
        full = await runtime.scheduler.sweep(full=True)  # planned now: the same report
        assert (full.plans, full.writes) == (1, 0)
        assert await runtime.scheduler.skipped() == reported


async def test_a_task_edited_by_hand_beyond_the_horizon_waits_for_the_horizon(
    unheard_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with unheard_herald() as (runtime, client):
        plan, _ = await daily_plan(runtime, client)
        three_weeks = replace(schedule_policy(runtime.settings), horizon=timedelta(days=21))
        await Scheduler(runtime.store, runtime.bus, three_weeks).sweep()
        await runtime.scheduler.sweep()  # two weeks again: the third week is not judged
        beyond = (await tasks_of(client, plan["id"]))[14]  # April 3rd, the first beyond
        noted = {**beyond, "note": [{"text": "Bring the readings"}]}
        assert (await client.put(f"/Task/{beyond['id']}", json=noted)).status_code == 200

        await settles(runtime)  # reconciling would not judge it either

        clock.advance(timedelta(days=1))  # the horizon reaches April 3rd: planned again
        assert await runtime.scheduler.due.wake() == 1  # yesterday's 09:00
        repairs = await runtime.scheduler.sweep()
        assert (repairs.plans, repairs.writes) == (1, 0)  # the note is no business of Herald's
        kept = next(t for t in await tasks_of(client, plan["id"]) if t["id"] == beyond["id"])
        assert (kept["status"], kept["note"]) == ("requested", noted["note"])
        await settles(runtime)


async def test_a_policy_change_between_runs_replans_every_careplan(
    unheard_herald: HeraldFactory,
) -> None:
    async with unheard_herald() as (runtime, client):
        plan, _ = await daily_plan(runtime, client)
        three_weeks = replace(schedule_policy(runtime.settings), horizon=timedelta(days=21))
        longer = Scheduler(runtime.store, runtime.bus, three_weeks)

        repairs = await longer.sweep()
        assert (repairs.plans, repairs.created) == (1, 7)
        assert len(await tasks_of(client, plan["id"])) == 21
        assert (await longer.sweep()).counts() == SETTLED

        # Back to two weeks: planned again, and the third week is left as it is (beyond the
        # horizon, not judged), so nothing is written.
        back = await runtime.scheduler.sweep()
        assert (back.plans, back.writes) == (1, 0)
        await settles(runtime)


async def test_a_write_that_lost_a_race_is_made_by_the_next_sweep(
    unheard_herald: HeraldFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with unheard_herald() as (runtime, client):
        pid = (await create(client, patient()))["id"]
        plan = await create(client, careplan(pid, timing_activity(DAILY_0900)))
        write_each = runtime.store.write_each

        async def first_refused(conn, writes):  # type: ignore[no-untyped-def]
            refused = PreconditionFailed("someone wrote this Task in between")
            return [refused, *await write_each(conn, writes[1:])]

        monkeypatch.setattr(runtime.store, "write_each", first_refused)
        await runtime.scheduler.sweep()
        monkeypatch.undo()
        assert len(await tasks_of(client, plan["id"])) == 13

        repairs = await runtime.scheduler.sweep()  # no row says the Task is missing; the plan does
        assert (repairs.plans, repairs.created, repairs.writes) == (1, 1, 1)
        assert starts(await tasks_of(client, plan["id"])) == BERLIN_0900
        await settles(runtime)


async def test_a_bulk_materialisation_on_postgresql_refreshes_the_planner_statistics(
    fresh_database: Callable[[str], str], clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Autovacuum refreshes statistics once a minute at best; a first materialisation grows
    the tables faster than that and reads them back (planned as if nearly empty, it scanned
    every Task for each batch), so the sweep analyzes them itself as they grow."""
    monkeypatch.setattr(statistics, "FIRST_AFTER", 20)
    url = fresh_database(f"stats_{uuid.uuid4().hex[:8]}")
    async with running_herald(url, clock=clock, **TEST_SCHEDULER, scheduler=False) as (
        runtime,
        client,
    ):
        pid = (await create(client, patient()))["id"]
        for _ in range(3):
            await create(client, careplan(pid, timing_activity(DAILY_0900)))
        before = await _analyzed(runtime)
        assert (await runtime.scheduler.sweep()).created == 42
        after = await _analyzed(runtime)
        assert all(after[t][0] > before[t][0] for t in after), (before, after)
        assert after["resources"][1] >= 42 + 4  # the Tasks, the CarePlans and the Patient


async def _analyzed(runtime: Runtime) -> dict[str, tuple[int, float]]:
    """Per table the scheduler reads back: how often it was analyzed by hand (autovacuum's
    own are counted apart), and the row count the planner believes."""
    async with runtime.store.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT s.relname, s.analyze_count, c.reltuples FROM pg_stat_user_tables s "
                "JOIN pg_class c ON c.oid = s.relid WHERE s.relname IN "
                "('resources', 'search_index', 'schedule_tasks')"
            )
        )
        return {name: (count, tuples) for name, count, tuples in rows}


def test_reconcile_from_the_command_line_leaves_settled_careplans_unless_full(
    tmp_path: Path,
) -> None:
    """`herald scheduler reconcile` (real clock): materialise, then settled, then --full."""
    runner = CliRunner()
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    daily = careplan("p1", timing_activity(DAILY_0900))
    del daily["period"]  # starts when stored, whenever the test runs
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**patient(), "id": "p1"},
                "request": {"method": "PUT", "url": "Patient/p1"},
            },
            {"resource": daily, "request": {"method": "POST", "url": "CarePlan"}},
        ],
    }
    (tmp_path / "plan.json").write_bytes(orjson.dumps(bundle))
    loaded = runner.invoke(app, ["load", str(tmp_path / "plan.json"), "--database-url", url])
    assert loaded.exit_code == 0, loaded.output

    def reconcile(*options: str) -> dict[str, int]:
        result = runner.invoke(app, ["scheduler", "reconcile", "--database-url", url, *options])
        assert result.exit_code == 0, result.output
        rows = re.findall(r"^\W*([a-z][a-z ]*?)\s*\W\s*(\d+)\s*\W*$", result.output, re.M)
        return {what: int(count) for what, count in rows}

    first = reconcile()
    assert first["plans"] == 1 and first["created"] > 0
    again = reconcile()
    assert (again["plans"], again["settled plans"], again["created"]) == (0, 1, 0)
    full = reconcile("--full")
    assert (full["plans"], full["settled plans"], full["created"]) == (1, 0, 0)
