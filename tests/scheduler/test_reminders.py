"""End to end, in both shapes: a patient's app subscribed (REST hook) to its ready Tasks
receives each reminder as it falls due, and not before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fhirstore.clock import FrozenClock
from fhirstore.wire import TASK_READY
from tests.e2e.delivery.conftest import status_of, subscription
from tests.scheduler.conftest import (
    TWICE_DAILY,
    HeraldFactory,
    careplan,
    create,
    patient,
    timing_activity,
    wait_for_tasks,
)
from tests.support.receiver import http_receiver


async def test_the_patients_app_hears_of_each_task_as_it_falls_due(
    start_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with http_receiver() as receiver, start_herald() as (_runtime, client):
        pid = (await create(client, patient("America/New_York")))["id"]
        other = (await create(client, patient("America/New_York")))["id"]
        sub = subscription(
            receiver.url,
            topic=TASK_READY,
            filters=(f"Task?patient=Patient/{pid}",),
            content="full-resource",
        )
        await create(client, sub)
        await receiver.wait_for(1, timeout=60)  # the handshake
        mine = await create(client, careplan(pid, timing_activity(TWICE_DAILY, text="Insulin")))
        await create(client, careplan(other, timing_activity(TWICE_DAILY)))
        await wait_for_tasks(client, mine["id"], 28)

        # 2026-03-20 06:00 UTC is 02:00 in New York (EDT since March 8th): nothing due yet
        heard: list[str] = []
        for hours in (6, 18):  # 08:00 and 20:00 in New York
            clock.set(datetime(2026, 3, 20, 6, 0, tzinfo=UTC) + timedelta(hours=hours))
            requests = await receiver.wait_for(1 + len(heard) + 1, timeout=30)
            bundle = requests[-1].json
            assert status_of(bundle)["type"] == "event-notification"
            task = bundle["entry"][1]["resource"]
            assert task["status"] == "ready"
            assert task["for"] == {"reference": f"Patient/{pid}"}
            assert task["description"] == "Insulin"
            heard.append(task["executionPeriod"]["start"])
        assert heard == ["2026-03-20T08:00:00-04:00", "2026-03-20T20:00:00-04:00"]
        assert len(receiver.requests) == 3  # the other patient's Tasks never reached this app
