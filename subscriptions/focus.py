"""Turn a recorded event into a `NotificationEvent`, reading the focus version when the
notification carries the resource (full-resource content, classic payloads), and hide from a
caller of `$events` the focus of each event it may not read (`withhold_unreadable`).

`RecentVersions` holds the focus versions this process matched lately (the change event
carries each), so that its dispatcher builds their notifications without reading them back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from fhirstore import Forbidden, Gone, NotFound, Store, StoredVersion, fhirjson
from fhirstore.access import Access
from subscriptions.notification import NotificationEvent
from subscriptions.numbering import RecordedEvent

FocusKey = tuple[str, str, int]  # (type, id, versionId)


class RecentVersions:
    """The last `size` focus versions the matcher of this process saw, by (type, id,
    versionId). A version never changes once written, so an entry is never stale; the oldest
    goes first. What is not here (another process matched it, or it went) is read.

    Each is kept as its JSON (about a fifth of the memory of the parsed resource: some 0.5 KB
    against 2.7 KB for a typical Observation) and parsed again when a notification needs it,
    which costs microseconds where reading it back costs a query."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._resources: dict[FocusKey, bytes] = {}

    def add(self, key: FocusKey, resource: dict[str, Any]) -> None:
        self._resources[key] = fhirjson.dumps(resource)
        if len(self._resources) > self._size:
            del self._resources[next(iter(self._resources))]

    def get(self, key: FocusKey) -> dict[str, Any] | None:
        found = self._resources.get(key)
        return None if found is None else fhirjson.loads(found)


async def version_resource(
    store: Store, resource_type: str, resource_id: str, version_id: int
) -> dict[str, Any] | None:
    """One version of a resource as a dict; None when it is a deletion or does not exist."""
    try:
        version = await store.vread(resource_type, resource_id, version_id)
    except (NotFound, Gone):
        return None
    return _resource(version)


async def versions_resources(
    store: Store, keys: Sequence[FocusKey]
) -> dict[FocusKey, dict[str, Any] | None]:
    """Many versions as dicts, in one read (`Store.versions`): None for a deletion; a version
    that does not exist is left out."""
    if not keys:
        return {}
    return {key: _resource(version) for key, version in (await store.versions(keys)).items()}


async def notification_events(
    store: Store,
    events: Sequence[RecordedEvent],
    *,
    with_resource: bool,
    recent: RecentVersions | None = None,
) -> list[NotificationEvent]:
    """`events` as notification events; with `with_resource`, each carries its focus version
    (from `recent`, or else read, all in one go), except deletions."""
    resources: dict[FocusKey, dict[str, Any] | None] = {}
    if with_resource:
        for event in events:
            known = recent.get(_key(event)) if recent is not None else None
            if event.interaction != "delete" and known is not None:
                resources[_key(event)] = known
        keys = [_key(e) for e in events if e.interaction != "delete" and _key(e) not in resources]
        resources.update(await versions_resources(store, keys))
    return [
        NotificationEvent(
            event_number=e.event_number,
            timestamp=e.occurred_at,
            focus_type=e.res_type,
            focus_id=e.res_id,
            focus_version=e.version_id,
            interaction=e.interaction,
            resource=resources.get(_key(e)) if e.interaction != "delete" else None,
        )
        for e in events
    ]


async def withhold_unreadable(
    store: Store, access: Access, events: Sequence[NotificationEvent]
) -> list[NotificationEvent]:
    """`events` with those whose focus `access` may not read `withheld` (number and time only,
    no focus, no resource). Each is judged as a read of that version would be (`Store.vread`:
    the version and the resource as it is now inside the caller's reach), so a narrower token
    than the one the Subscription was created with, or another patient context, learns only
    what it may read. A deletion is withheld from a narrowed caller: to it a deleted resource
    is not there (as for a read)."""
    verdicts: dict[tuple[str, str, int | None], bool] = {}
    out = []
    for event in events:
        key = (event.focus_type, event.focus_id, event.focus_version)
        if key not in verdicts:
            verdicts[key] = await _readable(store, access, event)
        out.append(event if verdicts[key] else replace(event, resource=None, withheld=True))
    return out


async def _readable(store: Store, access: Access, event: NotificationEvent) -> bool:
    reach = access.may(event.focus_type, "r")
    if reach is None:
        return False
    if reach.everything:
        return True
    if event.interaction == "delete" or event.focus_version is None:
        return False
    try:
        await store.vread(event.focus_type, event.focus_id, event.focus_version, access=access)
    except (NotFound, Gone, Forbidden):
        return False
    return True


def _key(event: RecordedEvent) -> FocusKey:
    return event.res_type, event.res_id, event.version_id


def _resource(version: StoredVersion | None) -> dict[str, Any] | None:
    if version is None or version.body is None:
        return None
    resource: dict[str, Any] = fhirjson.loads(version.body)  # decimals as written (1e400, 0.40)
    return resource
