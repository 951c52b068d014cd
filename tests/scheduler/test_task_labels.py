"""What a person puts in a Task's `meta` (tags, security labels, profiles) stays when the
scheduler moves the Task along: a label that restricts or classifies a reminder is not lost
when it falls due."""

from __future__ import annotations

from datetime import UTC, datetime

from fhirstore.clock import FrozenClock
from tests.scheduler.conftest import (
    TWICE_DAILY,
    HeraldFactory,
    careplan,
    create,
    move_clock,
    patient,
    timing_activity,
    wait_for_tasks,
)

TAG = {"system": "http://example.org/tags", "code": "pilot-cohort"}
LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}


async def test_a_tasks_tags_and_security_labels_stay_when_it_falls_due(
    start_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with start_herald() as (runtime, client):
        pid = (await create(client, patient("Europe/Berlin")))["id"]
        plan = await create(client, careplan(pid, timing_activity(TWICE_DAILY)))
        first = (await wait_for_tasks(client, plan["id"], 28))[0]
        assert first["status"] == "requested"
        labelled = {**first, "meta": {"tag": [TAG], "security": [LABEL]}}
        answer = await client.put(f"/Task/{first['id']}", json=labelled)
        assert answer.status_code == 200, answer.text

        await move_clock(runtime, clock, datetime(2026, 3, 20, 7, 0, tzinfo=UTC))  # 08:00 Berlin

        woken = (await client.get(f"/Task/{first['id']}")).json()
        assert woken["status"] == "ready"
        assert TAG in woken["meta"]["tag"]
        assert woken["meta"]["security"] == [LABEL]
        assert int(woken["meta"]["versionId"]) == int(answer.json()["meta"]["versionId"]) + 1
