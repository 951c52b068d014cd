"""Notification Bundles of topic-based subscriptions, and bodies of classic R4 notifications.

Topic-based subscriptions follow the Subscriptions R5 Backport IG. Every notification is a
`history` Bundle whose first entry is the notification status (`type` handshake | heartbeat |
event-notification | query-status | query-event): on R4B (the default) a SubscriptionStatus;
for a subscription whose payload says `fhirVersion=4.0`, the IG's R4 form, a Parameters resource
with the same facts (`status_parameters.py`). `$status` and `$events` answer in the version the
request asks for. Everything else below is the same in both forms. The channel's content level
decides what follows the status:

- `empty`: only the status; its `notificationEvent`s carry `eventNumber` and `timestamp` but no
  `focus`, so nothing about the changed resources leaves the server.
- `id-only`: the status names each focus (`notificationEvent.focus`, an absolute reference to
  the version the event is about, `.../Type/id/_history/n`), and one entry per event carries
  `fullUrl` (unversioned), `request` and `response` (the version in its ETag) but no
  `resource`. Two events of one resource share the `fullUrl`; the version-specific focus
  resolves to its own entry by FHIR's rule for references in a Bundle.
- `full-resource`: as id-only, plus the focus version in `resource` (a delete carries none).

A `history` Bundle needs `request` and `response` on every entry (bdl-3, bdl-4). The status entry
gets a GET of `Subscription/[id]/$status` (absolute, as in the IG's examples) answered 200; a
focus entry gets the interaction that made the change: POST `Type` (201) for a create, PUT
`Type/id` (200) for an update, DELETE `Type/id` (204) for a delete, with the version's ETag.

R4B types `eventsSinceSubscriptionStart` and `notificationEvent.eventNumber` as strings (the IG's
operations take event numbers as strings too); Herald writes decimal integers into them.

`NotificationBundle` is the schema of such a Bundle, for the AsyncAPI document of the topics
that carry one.

`$events` answers with the same Bundle typed `query-event`; `$status` answers with a `searchset`
of `query-status` SubscriptionStatus resources, one per subscription.

Classic R4 subscriptions have no Bundle: rest-hook POSTs the resource itself when
`channel.payload` is set, and an empty body when it is not. Their content level says which
(`full-resource` or `empty`; an email payload without attachment is `empty`).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fhirstore import fhirjson
from fhirstore.db import fhir_instant
from subscriptions.model import ContentLevel, NotificationType, SubscriptionSpec
from subscriptions.payload import R4, FhirVersion
from subscriptions.status_error import StatusError, error_concept
from subscriptions.status_parameters import StatusEvent, status_parameters

# The REST interaction that made each kind of change, and the status it was answered with.
_METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}
_STATUS = {"create": "201", "update": "200", "delete": "204"}


class NotificationBundle(BaseModel):
    """A Subscription notification: a FHIR `history` Bundle whose first entry is the status
    (handshake, heartbeat or event-notification): an R4B SubscriptionStatus, or for a
    subscription with `fhirVersion=4.0` on its payload the Backport IG's R4 Parameters;
    followed by an entry per event at id-only or full-resource content."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    resource_type: Literal["Bundle"] = Field(alias="resourceType")
    type: Literal["history"]
    timestamp: str
    entry: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    """One numbered event of a subscription, ready to be put into a notification."""

    event_number: int
    timestamp: datetime
    focus_type: str
    focus_id: str
    focus_version: int | None
    interaction: str  # create | update | delete
    resource: dict[str, Any] | None  # the focus version (full-resource); None for a delete
    # Whoever asks (`$events`) may not read the focus: the event is shown as at `empty`
    # content, its number and time only.
    withheld: bool = False


def subscription_status(
    spec: SubscriptionSpec,
    *,
    notification_type: NotificationType,
    status: str,
    events_since_start: int,
    events: Sequence[NotificationEvent],
    base_url: str,
    errors: Sequence[StatusError] = (),
    fhir_version: FhirVersion | None = None,
) -> dict[str, Any]:
    """The status of `spec` describing `events` at the channel's content level: an R4B
    SubscriptionStatus, or the R4 Parameters when `fhir_version` (by default the channel's)
    is 4.0."""
    base = base_url.rstrip("/")
    content = spec.channel.content
    shown = [_shown(e, content, base) for e in events]
    subscription = f"{base}/Subscription/{spec.id}"
    if (fhir_version or spec.channel.fhir_version) == R4:
        return status_parameters(
            resource_id=_new_id(),
            subscription=subscription,
            topic=spec.topic_url,
            status=status,
            notification_type=notification_type,
            events_since_start=events_since_start,
            events=shown,
            errors=[error_concept(error) for error in errors],
        )
    resource: dict[str, Any] = {
        "resourceType": "SubscriptionStatus",
        "id": _new_id(),
        "status": status,
        "type": notification_type,
        "eventsSinceSubscriptionStart": str(events_since_start),
    }
    if shown:
        resource["notificationEvent"] = [_notification_event(e) for e in shown]
    resource["subscription"] = {"reference": subscription}
    resource["topic"] = spec.topic_url
    if errors:
        resource["error"] = [error_concept(error) for error in errors]
    return resource


def notification_bundle(
    spec: SubscriptionSpec,
    *,
    notification_type: NotificationType,
    status: str,
    events_since_start: int,
    events: Sequence[NotificationEvent],
    base_url: str,
    now: datetime,
    errors: Sequence[StatusError] = (),
    fhir_version: FhirVersion | None = None,
) -> dict[str, Any]:
    """The `history` Bundle sent (or returned) for `events`, shaped by the content level, in
    `fhir_version` (by default the channel's)."""
    base = base_url.rstrip("/")
    head = subscription_status(
        spec,
        notification_type=notification_type,
        status=status,
        events_since_start=events_since_start,
        events=events,
        base_url=base,
        errors=errors,
        fhir_version=fhir_version,
    )
    entries = [_status_entry(head, f"{base}/Subscription/{spec.id}/$status")]
    content = spec.channel.content
    if content != "empty":
        entries.extend(_focus_entry(e, content, base) for e in events if not e.withheld)
    return {
        "resourceType": "Bundle",
        "id": _new_id(),
        "type": "history",
        "timestamp": fhir_instant(now),
        "entry": entries,
    }


def events_bundle(
    spec: SubscriptionSpec,
    *,
    status: str,
    events_since_start: int,
    events: Sequence[NotificationEvent],
    base_url: str,
    now: datetime,
    errors: Sequence[StatusError] = (),
    fhir_version: FhirVersion | None = None,
) -> dict[str, Any]:
    """What `Subscription/[id]/$events` returns: a notification Bundle typed `query-event`."""
    return notification_bundle(
        spec,
        notification_type="query-event",
        status=status,
        events_since_start=events_since_start,
        events=events,
        base_url=base_url,
        now=now,
        errors=errors,
        fhir_version=fhir_version,
    )


def status_bundle(statuses: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What `$status` returns: a `searchset` with one status per subscription (SubscriptionStatus
    resources, or R4 Parameters)."""
    return {
        "resourceType": "Bundle",
        "id": _new_id(),
        "type": "searchset",
        "total": len(statuses),
        "entry": [
            {"fullUrl": f"urn:uuid:{s['id']}", "resource": s, "search": {"mode": "match"}}
            for s in statuses
        ],
    }


def classic_body(spec: SubscriptionSpec, event: NotificationEvent) -> bytes | None:
    """The body of a classic R4 rest-hook notification, or None for an empty POST.

    With `channel.payload` set (content `full-resource`; on email only a payload that
    attaches), R4 posts the matching resource itself. R4 never notifies about
    a delete ("there is no notification when a resource is deleted"); should one reach here, or
    should the version be unreadable, the receiver gets an empty POST, which R4 defines as
    "something changed, query the server" rather than a body that is not the resource.
    """
    channel = spec.channel
    if channel.payload is None or channel.content == "empty":
        return None
    if event.interaction == "delete" or event.resource is None:
        return None
    return fhirjson.dumps(event.resource)


def _new_id() -> str:
    """A random (version 4) UUID for a notification's Bundle and status. Not a secret: drawn
    from `random`, which, unlike `uuid.uuid4`, costs no system call per notification."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def _shown(event: NotificationEvent, content: ContentLevel, base: str) -> StatusEvent:
    """`event` as the status shows it: its focus only above `empty`, and only if not withheld."""
    shows_focus = content != "empty" and not event.withheld
    return StatusEvent(
        event_number=event.event_number,
        timestamp=fhir_instant(event.timestamp),
        focus=_focus_reference(event, base) if shows_focus else None,
    )


def _notification_event(event: StatusEvent) -> dict[str, Any]:
    found: dict[str, Any] = {"eventNumber": str(event.event_number), "timestamp": event.timestamp}
    if event.focus is not None:
        found["focus"] = {"reference": event.focus}
    return found


def _status_entry(status: dict[str, Any], status_url: str) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{status['id']}",
        "resource": status,
        "request": {"method": "GET", "url": status_url},
        "response": {"status": "200"},
    }


def _focus_entry(event: NotificationEvent, content: ContentLevel, base: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": _focus_url(event, base)}
    if content == "full-resource" and event.interaction != "delete" and event.resource:
        entry["resource"] = event.resource
    entry["request"] = {"method": _METHOD[event.interaction], "url": _request_url(event)}
    entry["response"] = _response(event)
    return entry


def _focus_url(event: NotificationEvent, base: str) -> str:
    return f"{base}/{event.focus_type}/{event.focus_id}"


def _focus_reference(event: NotificationEvent, base: str) -> str:
    """The version the event is about (`.../Type/id/_history/n`): entries of one resource
    share their `fullUrl`, the version tells them apart (Bundle reference resolution)."""
    if event.focus_version is None:
        return _focus_url(event, base)
    return f"{_focus_url(event, base)}/_history/{event.focus_version}"


def _request_url(event: NotificationEvent) -> str:
    if event.interaction == "create":
        return event.focus_type
    return f"{event.focus_type}/{event.focus_id}"


def _response(event: NotificationEvent) -> dict[str, Any]:
    response: dict[str, Any] = {"status": _STATUS[event.interaction]}
    if event.focus_version is not None:
        response["etag"] = f'W/"{event.focus_version}"'
    response["lastModified"] = fhir_instant(event.timestamp)
    return response
