"""Reading a Kafka topic the way an integrator's new consumer would, for tests that check what
Herald wrote there."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, ConsumerRecord


async def read_topic(
    bootstrap: str, topic: str, count: int, *, within: float = 30.0
) -> list[ConsumerRecord]:
    """The first `count` (or more) records of `topic` from its start, as a new consumer group
    sees them; TimeoutError when fewer arrive within `within` seconds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(within):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += batch
    finally:
        await consumer.stop()
    return records
