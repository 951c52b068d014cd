"""No CarePlan change is a poison pill for the scheduler, in both shapes: a CarePlan it cannot
plan is retried, then quarantined, while later CarePlans still get their Tasks; once fixed, a
replay materialises the quarantined CarePlan's Tasks, once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

import scheduler.reconcile
from fhirstore.wire import SCHEDULER_GROUP
from tests.scheduler.conftest import (
    DAILY_0900,
    HeraldFactory,
    careplan,
    create,
    patient,
    tasks_of,
    timing_activity,
    wait_for_tasks,
)
from tests.support.waiting import eventually

QUICK_QUARANTINE = {
    "quarantine_attempts": 2,
    "quarantine_initial_backoff_seconds": 0.05,
    "quarantine_max_backoff_seconds": 0.2,
    "quarantine_replay_seconds": 0.2,
}


def _quarantined() -> float:
    sample = REGISTRY.get_sample_value(
        "herald_quarantined_messages_total", {"consumer": SCHEDULER_GROUP}
    )
    return sample or 0.0


def _values(parameter: dict[str, Any]) -> dict[str, Any]:
    return {
        part["name"]: next(v for k, v in part.items() if k.startswith("value"))
        for part in parameter["part"]
    }


async def test_a_careplan_the_scheduler_cannot_plan_is_quarantined_then_replayed(
    start_herald: HeraldFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = f"poison-{uuid.uuid4().hex[:8]}"
    plan_careplan = scheduler.reconcile.plan_careplan

    def planner_with_a_bug(careplan_id: str, *args: Any, **kwargs: Any) -> Any:
        if careplan_id == poison:
            raise ZeroDivisionError("simulated planning bug")
        return plan_careplan(careplan_id, *args, **kwargs)

    async with start_herald(**QUICK_QUARANTINE) as (_runtime, client):
        counted = _quarantined()
        monkeypatch.setattr(scheduler.reconcile, "plan_careplan", planner_with_a_bug)
        pid = (await create(client, patient()))["id"]
        body = {**careplan(pid, timing_activity(DAILY_0900)), "id": poison}
        assert (await client.put(f"/CarePlan/{poison}", json=body)).status_code == 201
        later = await create(client, careplan(pid, timing_activity(DAILY_0900)))
        await wait_for_tasks(client, later["id"], 14)  # the scheduler went on

        async def listed() -> list[dict[str, Any]]:
            found = (await client.get("/$quarantine")).json()["parameter"]
            return [_values(p) for p in found if p["name"] == "message"]

        async def quarantined() -> bool:
            return any(r["key"] == f"CarePlan/{poison}" for r in await listed())

        await eventually(quarantined, within=15, what=lambda: "the CarePlan was not quarantined")
        [record] = [r for r in await listed() if r["consumer"] == SCHEDULER_GROUP]
        assert record["key"] == f"CarePlan/{poison}"
        assert record["versionId"] == "1"
        assert record["errorClass"] == "scheduler.reconcile.PlanningFailed"
        assert f"could not plan CarePlan/{poison}" in record["reason"]
        assert "simulated planning bug" in record["reason"]
        assert await tasks_of(client, poison) == []
        assert _quarantined() == counted + 1

        monkeypatch.undo()  # the fix
        replay = await client.post("/$quarantine-replay", params={"id": record["id"]})
        assert replay.status_code == 200, replay.text
        assert _values({"part": replay.json()["parameter"]})["status"] == "replay-requested"
        await wait_for_tasks(client, poison, 14)

        async def resolved() -> bool:
            return not any(r["consumer"] == SCHEDULER_GROUP for r in await listed())

        await eventually(resolved, within=15, what=lambda: "the replay was never resolved")
        assert len(await tasks_of(client, poison)) == 14  # once: no duplicates
