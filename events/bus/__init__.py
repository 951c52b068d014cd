"""The bus: a small publish/subscribe interface with an in-process and a Kafka implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from events.bus.base import BatchHandler, Bus, Handler, Message, Unprocessable
    from events.bus.kafka import KafkaBus
    from events.bus.memory import MemoryBus
    from events.bus.topic import TopicSpec
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "BatchHandler",
    "Bus",
    "Handler",
    "KafkaBus",
    "MemoryBus",
    "Message",
    "TopicSpec",
    "Unprocessable",
]
