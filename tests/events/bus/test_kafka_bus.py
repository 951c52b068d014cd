"""What only the Kafka bus can show, beyond the shared contract (`test_contract.py`): a
broadcast reaches every process of an installation, from the moment it listens."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from pydantic import BaseModel

from events.bus import Bus, Message, TopicSpec
from events.bus.kafka import KafkaBus


class Push(BaseModel):
    text: str


PUSHES = TopicSpec("pushes", Push, "pushes for the listeners")


class Heard:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def __call__(self, messages: Sequence[Message]) -> None:
        self.values.extend(m.value for m in messages)


async def test_kafka_broadcast_reaches_every_process_from_now_on(kafka_bootstrap: str) -> None:
    namespace = f"bc{uuid.uuid4().hex[:8]}."
    publisher = KafkaBus(kafka_bootstrap, namespace=namespace)
    publisher.declare(PUSHES)
    await publisher.start()
    await publisher.publish([Message("pushes", "sub-1", b"before")])  # creates the topic
    buses: list[Bus] = []
    heard = [Heard(), Heard()]
    try:
        for listener in heard:
            bus = KafkaBus(kafka_bootstrap, namespace=namespace)
            bus.subscribe_broadcast("pushes", listener)
            await bus.start()
            buses.append(bus)

        # A listener joins once its partitions are assigned: ping until both heard one.
        for _ in range(60):
            await publisher.publish([Message("pushes", "sub-1", b"ping")])
            if all(b"ping" in listener.values for listener in heard):
                break
            await asyncio.sleep(1.0)
        assert all(b"ping" in listener.values for listener in heard), [h.values for h in heard]
        for listener in heard:
            assert b"before" not in listener.values  # from now on, not from the start
    finally:
        for bus in buses:
            await bus.stop()
        await publisher.stop()
