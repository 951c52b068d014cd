"""Notification delivery: the delivery core (`dispatcher.py`, `delivery.py`: ordering, retries,
status, dead letters) and one transport per channel behind the `Transport` port
(`transport.py`): REST hook (`resthook.py`), email (`email.py`), Kafka queue (`queue.py`) and
WebSocket (`websocket/`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.attempt import Attempt
    from channels.audit import attempt_recorder
    from channels.dispatcher import Dispatcher, new_owner
    from channels.email import EmailTransport, SmtpConfig
    from channels.endpoints import EndpointGuard, Recipients, SafeEndpoints
    from channels.policy import DeliveryPolicy
    from channels.queue import QUEUE, KafkaQueueTransport, QueueTopics
    from channels.resthook import RestHookTransport
    from channels.transport import Transport
    from channels.unprocessable import BoundedTries, Outage
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "QUEUE",
    "Attempt",
    "BoundedTries",
    "DeliveryPolicy",
    "Dispatcher",
    "EmailTransport",
    "EndpointGuard",
    "KafkaQueueTransport",
    "Outage",
    "QueueTopics",
    "Recipients",
    "RestHookTransport",
    "SafeEndpoints",
    "SmtpConfig",
    "Transport",
    "attempt_recorder",
    "new_owner",
]
