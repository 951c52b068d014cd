"""The change stream: event model, outbox relay and the bus it is published on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from events.asyncapi import asyncapi_document
    from events.model import ChangeEvent
    from events.relay import OutboxRelay
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "ChangeEvent",
    "OutboxRelay",
    "asyncapi_document",
]
