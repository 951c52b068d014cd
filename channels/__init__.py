"""Notification delivery: the core that orders, retries and records each subscription's
notifications (`delivery`, `dispatcher`), and one transport per channel: REST hook, WebSocket,
email and Kafka queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.audit import attempt_recorder
    from channels.delivery import Attempt, DeliveryPolicy
    from channels.dispatcher import Dispatcher, new_owner
    from channels.email import EmailSender, SmtpConfig
    from channels.endpoints import EndpointGuard, Recipients, SafeEndpoints
    from channels.queue import KafkaQueueSender, QueueTopics
    from channels.resthook import RestHookSender
    from channels.transport import Transport
    from channels.unprocessable import BoundedTries, Outage
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "Attempt",
    "BoundedTries",
    "DeliveryPolicy",
    "Dispatcher",
    "EmailSender",
    "EndpointGuard",
    "KafkaQueueSender",
    "Outage",
    "QueueTopics",
    "Recipients",
    "RestHookSender",
    "SafeEndpoints",
    "SmtpConfig",
    "Transport",
    "attempt_recorder",
    "new_owner",
]
