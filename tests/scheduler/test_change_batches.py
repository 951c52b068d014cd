"""Many changes reaching the scheduler together reschedule exactly what the same changes do one
at a time: the Patients' and requests' CarePlans are found for the whole batch at once, and a
Patient created in the default zone moves nothing.

The clock is frozen at 2026-03-20 06:00 UTC (07:00 in Berlin); the default zone is UTC.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tests.scheduler.conftest import (
    BERLIN_0900,
    DAILY_0900,
    HeraldFactory,
    careplan,
    patient,
    starts,
    tasks_of,
    timing_activity,
    wait_for_tasks,
)
from tests.scheduler.test_request_changes import medication_request, put, refers_to
from tests.support.waiting import eventually

MOVED = 5  # Patients moving from Berlin to New York
Changes = list[dict[str, Any]]


def _new_york_0900() -> list[str]:
    """Daily 09:00 in New York (summer time since March 8th) from 2026-03-20, 14 days."""
    days = [(3, d) for d in range(20, 32)] + [(4, 1), (4, 2)]
    return [f"2026-{m:02d}-{d:02d}T09:00:00-04:00" for m, d in days]


async def _scenario(client: httpx.AsyncClient, tag: str) -> tuple[dict[str, str], Changes]:
    """Patients and CarePlans planned before the changes, by role; and the changes: Patients
    moving to New York, one renamed, one leaving Berlin for the default zone, two created
    after their CarePlans (one in New York, one in the default zone) and a request stored
    after the CarePlan that refers to it."""
    plans: dict[str, str] = {}
    berliners = [f"moved{i}" for i in range(MOVED)] + ["renamed", "to-default"]
    for role in [*berliners, "asker"]:
        await put(client, {**patient(), "id": f"{tag}-{role}"})
    for role in [*berliners, "late-zone", "late-default"]:
        plans[role] = f"{tag}-plan-{role}"
        body = careplan(f"{tag}-{role}", timing_activity(DAILY_0900))
        await put(client, {**body, "id": plans[role]})
    plans["asker"] = f"{tag}-plan-asker"
    request_id = f"{tag}-request"
    await put(client, {**careplan(f"{tag}-asker", refers_to(request_id)), "id": plans["asker"]})
    for role in [*berliners, "late-zone", "late-default"]:  # the late ones in UTC, the default
        await wait_for_tasks(client, plans[role], 14)
    changes: Changes = [
        {**patient("America/New_York"), "id": f"{tag}-moved{i}"} for i in range(MOVED)
    ]
    changes += [
        {**patient(), "id": f"{tag}-renamed", "name": [{"family": "Okafor"}]},
        {**patient(None), "id": f"{tag}-to-default"},
        {**patient("America/New_York"), "id": f"{tag}-late-zone"},
        {**patient(None), "id": f"{tag}-late-default"},
        {**medication_request(f"{tag}-asker", DAILY_0900), "id": request_id},
    ]
    return plans, changes


async def _in_one_transaction(client: httpx.AsyncClient, changes: Changes) -> None:
    entries = [
        {"resource": c, "request": {"method": "PUT", "url": f"{c['resourceType']}/{c['id']}"}}
        for c in changes
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text


async def _one_by_one(client: httpx.AsyncClient, changes: Changes) -> None:
    for change in changes:
        await put(client, change)


async def _requested_at(client: httpx.AsyncClient, careplan_id: str, wanted: list[str]) -> None:
    have: list[str] = []

    async def there() -> bool:
        nonlocal have
        have = starts(await tasks_of(client, careplan_id), "requested")
        return have == wanted

    await eventually(there, within=30, what=lambda: f"CarePlan/{careplan_id} requested {have}")


def _seen(tasks: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """What a patient's app sees of each Task: start, status, why, and its version."""
    return sorted(
        (
            t["executionPeriod"]["start"],
            t["status"],
            t.get("businessStatus", {}).get("coding", [{}])[0].get("code", ""),
            t["meta"]["versionId"],
        )
        for t in tasks
    )


async def _outcome(
    client: httpx.AsyncClient,
    apply: Callable[[httpx.AsyncClient, Changes], Awaitable[None]],
    tag: str,
) -> dict[str, list[tuple[str, str, str, str]]]:
    plans, changes = await _scenario(client, tag)
    before = {role: _seen(await tasks_of(client, i)) for role, i in plans.items()}
    await apply(client, changes)
    new_york = _new_york_0900()
    for role in [f"moved{i}" for i in range(MOVED)] + ["late-zone"]:
        await _requested_at(client, plans[role], new_york)
    utc_0900 = starts(await tasks_of(client, plans["late-default"]), "requested")
    await _requested_at(client, plans["to-default"], utc_0900)
    await wait_for_tasks(client, plans["asker"], 14)
    after = {role: _seen(await tasks_of(client, i)) for role, i in plans.items()}
    for role in ("renamed", "late-default"):  # nothing to move: untouched
        assert after[role] == before[role]
    assert [t[0] for t in after["renamed"]] == BERLIN_0900
    assert [t[0] for t in after["asker"]] == BERLIN_0900
    return after


async def test_a_transaction_changing_many_patients_reschedules_as_the_same_changes_one_by_one(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (runtime, client):
        together = await _outcome(client, _in_one_transaction, "batch")
        alone = await _outcome(client, _one_by_one, "single")
        assert together == alone
        # Nothing was left for the sweep to fix (it plans again the CarePlans whose Patient
        # was created in the default zone, to the same Tasks).
        assert (await runtime.scheduler.sweep()).writes == 0
