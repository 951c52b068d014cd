"""The relay stores its cursor now and then, not after every batch: a restart after a crash
republishes what was published since (the same events, the same ids) and skips nothing, and
once the stream is idle the cursor is stored, so a restart then republishes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events import relay as relay_module
from events.bus import Message
from events.bus.memory import MemoryBus
from events.relay import OutboxRelay
from fhirstore.clock import SystemClock
from fhirstore.db.engine import create_engine
from fhirstore.db.migrate import upgrade
from fhirstore.db.writer import PendingWrite, write_versions
from fhirstore.store import Store
from fhirstore.wire import CHANGES_TOPIC


class Published:
    """The bus and the events it carried: (sequence, event id), in order."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str]] = []
        self.bus = MemoryBus()
        self.bus.subscribe(CHANGES_TOPIC, "cursor", self._record)

    async def _record(self, message: Message) -> None:
        event = json.loads(message.value)
        self.events.append((int(event["sequence"]), event["eventId"]))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    await upgrade(engine)
    try:
        yield Store(engine, SystemClock())
    finally:
        await engine.dispose()


async def write_patients(store: Store, *ids: str) -> None:
    async with store.write_transaction() as conn:
        writes = [PendingWrite("Patient", i, {"resourceType": "Patient", "id": i}) for i in ids]
        await write_versions(conn, writes, store.clock.now())


async def relayed(store: Store, published: Published) -> OutboxRelay:
    """A relay (as after a restart: it reads the stored cursor) that published everything."""
    relay = OutboxRelay(store, published.bus)
    await published.bus.start()
    while await relay.relay_once():
        pass
    return relay


async def test_a_crash_republishes_since_the_stored_cursor_and_idle_stores_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "CURSOR_EVERY", 3600.0)  # no timed store in this test
    await write_patients(store, "a", "b")
    first = Published()
    relay = await relayed(store, first)  # its idle pass stored the cursor
    await write_patients(store, "c", "d")
    assert await relay.relay_once() == 2  # published, the cursor not stored yet
    await first.bus.stop()

    crashed = Published()  # a restart now: c and d again, with the same ids
    restarted = await relayed(store, crashed)
    assert crashed.events == first.events[2:]
    assert len(first.events) == 4

    assert await restarted.relay_once() == 0  # idle: the cursor is stored
    await crashed.bus.stop()
    later = Published()
    await relayed(store, later)
    assert later.events == []
    await later.bus.stop()
