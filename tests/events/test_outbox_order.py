"""On PostgreSQL, the outbox is read in commit order: many transactions commit at once, in
whatever order they finish, and the relay reading along never meets a change whose position is
lower than one it already published (it would have moved its cursor past it, and the change
would never go out). The writer takes a transaction lock before its outbox insert for this
(`fhirstore/db/writer.py`); this test is what fails without it."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from events.bus import Message
from events.bus.memory import MemoryBus
from events.relay import OutboxRelay
from fhirstore.clock import SystemClock
from fhirstore.db.engine import create_engine
from fhirstore.db.migrate import upgrade
from fhirstore.db.writer import PendingWrite, write_versions
from fhirstore.store import Store
from fhirstore.wire import CHANGES_TOPIC

pytestmark = pytest.mark.postgres

WRITERS = 8  # stores with engines of their own: concurrent transactions, not one group commit
WRITES_EACH = 30


@pytest.fixture
async def engines(fresh_database: Callable[[str], str]) -> AsyncIterator[list[AsyncEngine]]:
    """An engine for the relay, then one per writer, on one migrated PostgreSQL database."""
    url = fresh_database("outbox_order")
    made = [create_engine(url) for _ in range(WRITERS + 1)]
    await upgrade(made[0])
    try:
        yield made
    finally:
        for engine in made:
            await engine.dispose()


async def write(store: Store, writer: int) -> None:
    """One new Patient per transaction, each transaction holding on a moment after its outbox
    insert, so that commits finish out of the order their positions were drawn in."""
    for n in range(WRITES_EACH):
        resource_id = f"w{writer}-{n}"
        patient = {"resourceType": "Patient", "id": resource_id}
        async with store.write_transaction() as conn:
            await write_versions(
                conn, [PendingWrite("Patient", resource_id, patient, new=True)], store.clock.now()
            )
            await asyncio.sleep(random.uniform(0, 0.01))


async def visible(engine: AsyncEngine) -> set[int]:
    async with engine.connect() as conn:
        return set((await conn.execute(text("SELECT seq FROM outbox"))).scalars())


async def test_the_relay_reads_the_outbox_in_commit_order(engines: list[AsyncEngine]) -> None:
    delivered: list[int] = []
    late: list[tuple[int, int]] = []  # (a position that appeared, the highest seen before it)
    seen: set[int] = set()

    async def record(message: Message) -> None:
        delivered.append(int(json.loads(message.value)["sequence"]))

    bus = MemoryBus()
    bus.subscribe(CHANGES_TOPIC, "order", record)
    await bus.start()
    relay = OutboxRelay(Store(engines[0], SystemClock()), bus, batch_size=7)
    writers = [Store(engine, SystemClock()) for engine in engines[1:]]

    writing = asyncio.gather(*(write(store, n) for n, store in enumerate(writers)))
    while not writing.done():  # read along while the writers commit
        appeared = await visible(engines[0]) - seen
        late += [(p, max(seen)) for p in appeared if seen and p < max(seen)]
        seen |= appeared
        await relay.relay_once()
    await writing
    while await relay.relay_once():
        pass
    await bus.stop()

    stored = sorted(await visible(engines[0]))
    assert len(stored) == WRITERS * WRITES_EACH
    assert late == [], "a change became visible below a position already read"
    assert delivered == stored, "the relay skipped a committed change"
