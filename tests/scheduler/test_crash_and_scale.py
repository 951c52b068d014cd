"""Materialisation survives a SIGKILL, and two schedulers on one PostgreSQL never duplicate."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from events.bus.memory import MemoryBus
from fhirstore.clock import FrozenClock
from fhirstore.wire import OCCURRENCE_SYSTEM
from herald.runtime import Runtime
from herald.settings import Settings
from tests.scheduler.conftest import TEST_SCHEDULER, careplan, timing_activity
from tests.support.process import HeraldProcess
from tests.support.waiting import eventually

FHIR_JSON = {"Content-Type": "application/fhir+json"}
PLANS = 600
PER_PLAN = 5


def _five_mornings(patient_id: str) -> dict[str, Any]:
    """Five daily 09:00 UTC occurrences starting tomorrow: inside the horizon whenever it runs."""
    first = (datetime.now(UTC) + timedelta(days=1)).date()
    repeat = {
        "frequency": 1,
        "period": 1,
        "periodUnit": "d",
        "timeOfDay": ["09:00:00"],
        "boundsPeriod": {
            "start": first.isoformat(),
            "end": (first + timedelta(days=4)).isoformat(),
        },
    }
    return careplan(patient_id, timing_activity(repeat))


def _occurrences_in(database: Path) -> Counter[str]:
    """How many live Tasks carry each occurrence identifier."""
    with sqlite3.connect(database) as conn:
        bodies = conn.execute(
            "SELECT body FROM resources WHERE res_type = 'Task' AND deleted = 0"
        ).fetchall()
    return Counter(
        i["value"]
        for (body,) in bodies
        for i in orjson.loads(body).get("identifier", [])
        if i["system"] == OCCURRENCE_SYSTEM
    )


async def test_sigkill_mid_materialisation_then_restart_gives_no_duplicates_and_no_gaps(
    tmp_path: Path,
) -> None:
    database = tmp_path / "herald.db"
    env = {"HERALD_DATABASE_URL": f"sqlite+aiosqlite:///{database}", "HERALD_LOG_LEVEL": "WARNING"}
    server = HeraldProcess(env, tmp_path / "herald.log")
    await asyncio.to_thread(server.start)
    try:
        entries = [
            {"resource": _five_mornings("p1"), "request": {"method": "POST", "url": "CarePlan"}}
            for _ in range(PLANS)
        ]
        entries.insert(
            0,
            {
                "resource": {"resourceType": "Patient", "id": "p1"},
                "request": {"method": "PUT", "url": "Patient/p1"},
            },
        )
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        async with httpx.AsyncClient(headers=FHIR_JSON, timeout=120) as client:
            response = await client.post(server.base, json=bundle)
            assert response.status_code == 200, response.text[:500]
        # Kill it once some, not all, of the Tasks are written.
        written = 0

        async def some_written() -> bool:
            nonlocal written
            written = await asyncio.to_thread(lambda: sum(_occurrences_in(database).values()))
            return written > 0

        await eventually(some_written, within=60, what=lambda: "no Task was ever written")
        await asyncio.to_thread(server.kill)
        at_kill = sum(_occurrences_in(database).values())
        assert at_kill < PLANS * PER_PLAN, (
            "materialisation finished before the kill; make it bigger"
        )

        await asyncio.to_thread(server.start)  # the sweep at start finishes the job

        async def complete() -> bool:
            return len(await asyncio.to_thread(_occurrences_in, database)) == PLANS * PER_PLAN

        await eventually(
            complete,
            within=120,
            what=lambda: f"{len(_occurrences_in(database))} of {PLANS * PER_PLAN} occurrences",
        )
        occurrences = _occurrences_in(database)
        assert max(occurrences.values()) == 1  # no duplicates
        per_plan = Counter(value.split("/activity/")[0] for value in occurrences)
        assert set(per_plan.values()) == {PER_PLAN}  # no gaps
    finally:
        await asyncio.to_thread(server.stop)


async def test_two_schedulers_on_postgresql_make_and_wake_each_task_once(
    fresh_database,  # type: ignore[no-untyped-def]
) -> None:
    url = fresh_database(f"sched_two_{uuid.uuid4().hex[:8]}")
    clock = FrozenClock(datetime(2026, 3, 20, 6, 0, tzinfo=UTC))
    settings = Settings(database_url=url, relay_poll_seconds=0.05, **TEST_SCHEDULER)
    first = Runtime(settings, clock=clock, bus=MemoryBus())
    second = Runtime(settings, clock=clock, bus=MemoryBus())
    await first.start()
    await second.start()
    try:
        daily = {"frequency": 1, "period": 1, "periodUnit": "d", "timeOfDay": ["09:00:00"]}
        plans = []
        for n in range(40):
            plan = careplan("p", timing_activity(daily))
            writer = first if n % 2 else second
            plans.append((await writer.store.create(plan)).version.id)
        # both sweep at once, again and again, while the stream reconciles too
        for _ in range(3):
            await asyncio.gather(first.scheduler.sweep(), second.scheduler.sweep())
        clock.set(datetime(2026, 3, 20, 9, 0, 1, tzinfo=UTC))
        await asyncio.gather(
            first.scheduler.due.wake(),
            second.scheduler.due.wake(),
            first.scheduler.sweep(),
            second.scheduler.sweep(),
        )

        async with first.engine.connect() as conn:
            rows = (
                await conn.exec_driver_sql(
                    "SELECT res_id, version_id, body FROM resources WHERE res_type = 'Task'"
                )
            ).all()
        tasks = [(r.res_id, r.version_id, orjson.loads(r.body)) for r in rows]
        identifiers = Counter(t["identifier"][0]["value"] for _, _, t in tasks)
        assert len(identifiers) == 40 * 15  # 09:00 UTC from March 20th to April 3rd
        assert max(identifiers.values()) == 1
        ready = [(version, t) for _, version, t in tasks if t["status"] == "ready"]
        assert len(ready) == 40  # today's 09:00, once per CarePlan
        assert {version for version, _ in ready} == {2}  # created, then woken once
    finally:
        await first.stop()
        await second.stop()
