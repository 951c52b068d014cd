"""Several Herald processes on one PostgreSQL: one relay leads, the others take over, and a write
in any process wakes the leader at once (LISTEN/NOTIFY), not at its next poll."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from sqlalchemy import text

from events.bus import Message
from events.bus.memory import MemoryBus
from events.model import ChangeEvent
from events.relay import RELAY_LOCK_KEY
from fhirstore.wire import CHANGES_TOPIC
from herald.runtime import Runtime
from herald.settings import Settings
from tests.support.waiting import eventually


class Collector:
    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []
        self.arrived = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.events.append(ChangeEvent.from_json(message.value))
        self.arrived.set()

    async def wait_for(self, resource_id: str, within: float = 10.0) -> ChangeEvent:
        async with asyncio.timeout(within):
            while True:
                for event in self.events:
                    if event.id == resource_id:
                        return event
                self.arrived.clear()
                await self.arrived.wait()


def _runtime(url: str, collector: Collector, *, relay: bool, poll: float) -> Runtime:
    bus = MemoryBus()
    bus.subscribe(CHANGES_TOPIC, "test", collector)
    return Runtime(Settings(database_url=url, relay_poll_seconds=poll), bus=bus, run_relay=relay)


async def _leading(runtime: Runtime) -> None:
    async def leads() -> bool:
        return runtime.relay.leadership.leading

    await eventually(leads, within=10, what=lambda: "the relay never took the lock")


async def test_relay_leader_takes_writes_of_other_processes_and_fails_over(
    fresh_database: Callable[[str], str],
) -> None:
    url = fresh_database(f"scale_{uuid.uuid4().hex[:8]}")
    first, second = Collector(), Collector()
    # A long poll interval: only the NOTIFY wake-up can make events arrive promptly.
    leader = _runtime(url, first, relay=True, poll=60)
    standby = _runtime(url, second, relay=True, poll=0.2)
    api_only = _runtime(url, Collector(), relay=False, poll=60)
    await leader.start()
    await _leading(leader)  # the leader takes the lock first
    await standby.start()
    await api_only.start()
    try:
        written = await api_only.store.create({"resourceType": "Patient"})
        event = await first.wait_for(written.version.id)
        assert event.interaction == "create"
        assert second.events == []  # the standby relays nothing while the leader lives

        await leader.stop()  # the leader goes away; the standby takes over
        after = await api_only.store.create({"resourceType": "Patient"})
        taken_over = await second.wait_for(after.version.id)
        assert taken_over.sequence > event.sequence
    finally:
        for runtime in (api_only, standby, leader):
            await runtime.stop()


async def test_a_leader_that_lost_its_connection_stops_relaying(
    fresh_database: Callable[[str], str],
) -> None:
    url = fresh_database(f"scale_{uuid.uuid4().hex[:8]}")
    first, second = Collector(), Collector()
    leader = _runtime(url, first, relay=True, poll=0.1)
    standby = _runtime(url, second, relay=True, poll=0.1)
    await leader.start()
    await _leading(leader)
    await standby.start()
    try:
        before = await standby.store.create({"resourceType": "Patient"})
        await first.wait_for(before.version.id)

        async with standby.engine.connect() as conn:  # the database drops the leader's session
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objid = :k AND granted"
                ),
                {"k": RELAY_LOCK_KEY},
            )
            await conn.commit()
        after = await standby.store.create({"resourceType": "Patient"})
        # Whichever relay wins the new election publishes it.
        waits = [asyncio.create_task(c.wait_for(after.version.id, 15)) for c in (first, second)]
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        assert any(task.exception() is None for task in done)
        await asyncio.sleep(1.0)  # time enough for a second, stray relay to publish it too
        copies = [e for e in first.events + second.events if e.id == after.version.id]
        assert len(copies) == 1
    finally:
        await standby.stop()
        await leader.stop()
