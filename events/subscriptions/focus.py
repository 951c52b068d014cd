"""Turn a recorded event into a `NotificationEvent`, reading the focus version when the
notification carries the resource (full-resource content, classic payloads)."""

from __future__ import annotations

import orjson

from events.subscriptions.ledger import RecordedEvent
from events.subscriptions.notification import NotificationEvent
from fhirstore.errors import Gone, NotFound
from fhirstore.store import Store


async def notification_event(
    store: Store, event: RecordedEvent, *, with_resource: bool
) -> NotificationEvent:
    resource = None
    if with_resource and event.interaction != "delete":
        try:
            version = await store.vread(event.res_type, event.res_id, event.version_id)
        except (NotFound, Gone):
            version = None
        if version is not None and version.body is not None:
            resource = orjson.loads(version.body)
    return NotificationEvent(
        event_number=event.event_number,
        timestamp=event.occurred_at,
        focus_type=event.res_type,
        focus_id=event.res_id,
        focus_version=event.version_id,
        interaction=event.interaction,
        resource=resource,
    )
