"""The bus: a small publish/subscribe interface with an in-process and a Kafka implementation."""

from events.bus.base import BatchHandler, Bus, Handler, Message
from events.bus.topic import TopicSpec

__all__ = ["BatchHandler", "Bus", "Handler", "Message", "TopicSpec"]
