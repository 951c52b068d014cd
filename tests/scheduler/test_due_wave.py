"""Many reminders due in the same minute, more than one wake-up batch holds, and two wakers at
once: every Task becomes ready once, and each app hears of its patient's Task once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from fhirstore.clock import FrozenClock
from fhirstore.wire import TASK_READY
from herald.runtime import schedule_policy
from scheduler.due import DueTasks
from tests.e2e.delivery.conftest import status_of, subscription
from tests.scheduler.conftest import careplan, create, patient, timing_activity
from tests.support.herald import HeraldFactory
from tests.support.receiver import Request, http_receiver
from tests.support.waiting import eventually

PATIENTS = 12
BATCH = 5  # so the wave spans three batches of each waker
# Once, at 08:00 in Berlin on 2026-03-20 (07:00 UTC).
THIS_MORNING = {
    "frequency": 1,
    "period": 1,
    "periodUnit": "d",
    "timeOfDay": ["08:00:00"],
    "boundsPeriod": {"start": "2026-03-20", "end": "2026-03-20"},
}
DUE = datetime(2026, 3, 20, 7, 0, tzinfo=UTC)


async def test_a_wave_of_due_tasks_wakes_each_once_and_each_app_hears_its_own(
    start_herald: HeraldFactory, clock: FrozenClock
) -> None:
    # The scheduler's own loops are off: only the two wakers below wake Tasks.
    async with http_receiver() as receiver, start_herald(scheduler=False) as (runtime, client):
        patients = [(await create(client, patient("Europe/Berlin")))["id"] for _ in range(PATIENTS)]
        apps = {}
        for pid in patients:
            filters = (f"Task?patient=Patient/{pid}",)
            made = await create(
                client, subscription(receiver.url, topic=TASK_READY, filters=filters)
            )
            apps[made["id"]] = pid
        integrator = (await create(client, subscription(receiver.url, topic=TASK_READY)))["id"]
        await receiver.wait_for(PATIENTS + 1, timeout=60)  # the handshakes
        for pid in patients:
            await create(client, careplan(pid, timing_activity(THIS_MORNING)))
        await runtime.scheduler.sweep()

        clock.set(DUE)
        policy = schedule_policy(runtime.settings)
        wakers = [DueTasks(runtime.store, policy, batch=BATCH) for _ in range(2)]
        counted = _woken_metric()
        woken = await asyncio.gather(*(w.wake() for w in wakers))
        assert sum(woken) == PATIENTS
        assert await wakers[0].wake() == 0  # nothing is woken twice
        assert _woken_metric() - counted == PATIENTS  # what /metrics shows

        async def all_heard() -> bool:
            return sum(map(len, _events(receiver.requests).values())) >= 2 * PATIENTS

        await eventually(all_heard, within=60, what=lambda: f"{_events(receiver.requests)}")
        heard = _events(receiver.requests)
        tasks = await client.get("/Task", params={"status": "ready", "_count": "100"})
        ready = {e["resource"]["id"]: e["resource"] for e in tasks.json()["entry"]}
        assert len(ready) == PATIENTS
        assert {t["meta"]["versionId"] for t in ready.values()} == {"2"}  # made, woken once
        owner = {tid: t["for"]["reference"] for tid, t in ready.items()}
        for sub, pid in apps.items():
            assert [owner[tid] for tid in heard[sub]] == [f"Patient/{pid}"]
        assert Counter(heard[integrator]) == Counter(dict.fromkeys(ready, 1))


def _events(requests: list[Request]) -> dict[str, list[str]]:
    """Task ids each subscription was notified of, in arrival order (handshakes left out)."""
    heard: dict[str, list[str]] = {}
    for request in requests:
        status = status_of(request.json)
        if status["type"] != "event-notification":
            continue
        sub = status["subscription"]["reference"].rsplit("/", 1)[-1]
        for event in status["notificationEvent"]:
            task = event["focus"]["reference"].partition("Task/")[2].split("/")[0]
            heard.setdefault(sub, []).append(task)
    return heard


def _woken_metric() -> float:
    labels = {"kind": "woken", "cause": "due"}
    return REGISTRY.get_sample_value("herald_scheduler_tasks_written_total", labels) or 0.0
