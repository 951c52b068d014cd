"""Pruning published outbox rows never makes a later change invisible to the relay."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from events.bus import Message
from events.bus.memory import MemoryBus
from events.model import ChangeEvent
from fhirstore.db.schema import outbox
from fhirstore.wire import CHANGES_TOPIC
from tests.support.herald import running_herald


async def test_a_change_after_the_outbox_was_pruned_empty_is_published(
    database_url: str,
) -> None:
    bus = MemoryBus()
    received: list[ChangeEvent] = []
    arrived = asyncio.Event()

    async def consume(message: Message) -> None:
        if message.key.startswith("SubscriptionTopic/"):
            return  # the built-in topics, seeded at start
        received.append(ChangeEvent.from_json(message.value))
        arrived.set()

    async def wait_for(count: int) -> None:
        async with asyncio.timeout(10):
            while len(received) < count:
                arrived.clear()
                await arrived.wait()

    bus.subscribe(CHANGES_TOPIC, "test", consume)
    async with running_herald(database_url, bus=bus, outbox_retention_hours=0) as (rt, client):
        for _ in range(3):
            await client.post("/Patient", json={"resourceType": "Patient"})
        await wait_for(3)
        async with asyncio.timeout(10):  # the relay prunes what it published (retention 0)
            while True:
                rt.relay._last_prune = float("-inf")
                async with rt.engine.connect() as conn:
                    left = (await conn.execute(select(func.count()).select_from(outbox))).scalar()
                if left == 0:
                    break
                await asyncio.sleep(0.05)
        late = (await client.post("/Patient", json={"resourceType": "Patient"})).json()
        await wait_for(4)

    assert received[-1].id == late["id"]
    assert received[-1].sequence > received[2].sequence
