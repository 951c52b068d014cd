"""The scheduler writes as its own system identity: each Task it creates or moves is in the
audit trail under `herald-scheduler` with the scope that allowed it, and an identity without
a Task scope writes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fhirstore.access.acting import ActingAs
from fhirstore.access.principal import Principal
from fhirstore.access.scopes import Scopes
from fhirstore.clock import FrozenClock
from fhirstore.db.writer import PendingWrite
from fhirstore.errors import Forbidden
from tests.scheduler.conftest import (
    DAILY_0900,
    HeraldFactory,
    careplan,
    create,
    patient,
    timing_activity,
    wait_for_tasks,
)
from tests.support.herald import stored_counts
from tests.support.waiting import eventually


def _scheduler_events(bundle: dict[str, Any]) -> list[tuple[str, str, list[str], str]]:
    """(action, entity, policy, agent client) of each AuditEvent in a search result."""
    found = []
    for entry in bundle.get("entry", []):
        event = entry["resource"]
        requestor = next(a for a in event["agent"] if a["requestor"])
        client = next(a for a in event["agent"] if not a["requestor"])
        assert requestor["who"]["identifier"]["value"] == "herald-scheduler"
        assert event["type"]["code"] == "system-write"
        found.append(
            (
                event["action"],
                event["entity"][0]["what"]["reference"],
                requestor["policy"],
                client["who"]["identifier"]["value"],
            )
        )
    return found


async def test_the_audit_trail_shows_the_scheduler_writing_each_task(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        subject = await create(client, patient())
        plan = await create(client, careplan(subject["id"], timing_activity(DAILY_0900)))
        tasks = await wait_for_tasks(client, plan["id"], 14)
        clock.advance(timedelta(hours=3, minutes=1))  # 09:01 in Berlin: the first is due
        await wait_for_tasks(client, plan["id"], 1, status="ready")
        events: list[tuple[str, str, list[str], str]] = []

        async def woken_recorded() -> bool:  # recorded just after the wake-up commits
            nonlocal events
            await runtime.audit.flush()
            answer = await client.get(
                "/AuditEvent", params={"agent": "herald-scheduler", "_count": "100"}
            )
            assert answer.status_code == 200, answer.text
            events = _scheduler_events(answer.json())
            return any(a == "U" for a, *_ in events)

        await eventually(woken_recorded, within=10, what=lambda: f"no wake-up in {events}")
        created = sorted(e for a, e, _, _ in events if a == "C")
        assert created == sorted(f"Task/{t['id']}" for t in tasks)
        assert [e for a, e, _, _ in events if a == "U"] == [f"Task/{tasks[0]['id']}"]
        assert {(tuple(p), c) for _, _, p, c in events} == {(("system/Task.cruds",), "herald")}
        by_entity = await client.get("/AuditEvent", params={"entity": f"Task/{tasks[0]['id']}"})
        assert [a for a, *_ in _scheduler_events(by_entity.json())] == ["U", "C"]  # newest first


async def test_an_identity_without_a_task_scope_writes_nothing(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald(scheduler=False) as (runtime, _):
        reader = Principal("system", "reader", Scopes.parse("system/Task.rs"), client="herald")
        recorded: list[Any] = []
        acting = ActingAs(runtime.store, reader, recorded.append)
        before = await stored_counts(runtime)
        task = {"resourceType": "Task", "status": "requested", "intent": "order"}
        with pytest.raises(Forbidden, match=r"Task\.c"):
            async with acting.transaction() as tx:
                await tx.write_each([PendingWrite("Task", "t1", {**task, "id": "t1"})])
        assert await stored_counts(runtime) == before
        assert recorded == []
