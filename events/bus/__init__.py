"""The bus: a small publish/subscribe interface with an in-process and a Kafka implementation."""

from events.bus.base import Bus, Handler, Message

__all__ = ["Bus", "Handler", "Message"]
