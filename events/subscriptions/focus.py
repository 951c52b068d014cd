"""Turn a recorded event into a `NotificationEvent`, reading the focus version when the
notification carries the resource (full-resource content, classic payloads)."""

from __future__ import annotations

from typing import Any

import orjson

from events.subscriptions.ledger import RecordedEvent
from events.subscriptions.notification import NotificationEvent
from fhirstore.errors import Gone, NotFound
from fhirstore.store import Store


async def version_resource(
    store: Store, resource_type: str, resource_id: str, version_id: int
) -> dict[str, Any] | None:
    """One version of a resource as a dict; None when it is a deletion or does not exist."""
    try:
        version = await store.vread(resource_type, resource_id, version_id)
    except (NotFound, Gone):
        return None
    return orjson.loads(version.body) if version.body is not None else None


async def notification_event(
    store: Store, event: RecordedEvent, *, with_resource: bool
) -> NotificationEvent:
    resource = None
    if with_resource and event.interaction != "delete":
        resource = await version_resource(store, event.res_type, event.res_id, event.version_id)
    return NotificationEvent(
        event_number=event.event_number,
        timestamp=event.occurred_at,
        focus_type=event.res_type,
        focus_id=event.res_id,
        focus_version=event.version_id,
        interaction=event.interaction,
        resource=resource,
    )
