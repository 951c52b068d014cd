"""Topics are declared once, with their schema, before anything is published to them."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from events.bus import Message, TopicSpec
from events.bus.kafka import KafkaBus
from events.bus.memory import MemoryBus
from events.model import ChangeEvent
from events.relay import CHANGES
from fhirstore.wire import CHANGES_TOPIC


class Other(BaseModel):
    value: str


async def test_the_kafka_bus_refuses_to_publish_to_a_topic_nobody_declared() -> None:
    bus = KafkaBus("127.0.0.1:9")  # never started: the refusal comes before any connection
    bus.declare(CHANGES)
    with pytest.raises(ValueError, match=r"'notify\.orders' is not declared"):
        await bus.publish(
            [Message(CHANGES_TOPIC, "Patient/1", b"{}"), Message("notify.orders", "s", b"{}")]
        )


@pytest.mark.parametrize("make_bus", [MemoryBus, lambda: KafkaBus("127.0.0.1:9")])
def test_a_topic_carries_one_kind_of_message(make_bus: type[MemoryBus]) -> None:
    bus = make_bus()
    bus.declare(CHANGES)
    bus.declare(TopicSpec(CHANGES_TOPIC, ChangeEvent, CHANGES.description))  # the same again
    with pytest.raises(ValueError, match="declared twice"):
        bus.declare(TopicSpec(CHANGES_TOPIC, Other, "something else"))


def test_the_kafka_bus_documents_each_declared_topic_once() -> None:
    bus = KafkaBus("127.0.0.1:9")
    bus.declare(CHANGES)
    bus.declare(CHANGES)
    assert [p.specification.name for p in bus.broker.publishers] == [CHANGES_TOPIC]
