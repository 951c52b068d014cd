"""The matcher: a consumer group on `fhir.changes` that turns changes into numbered events.

For each change it asks the `SubscriptionIndex` which subscriptions it concerns (reading the
previous version and the resources chained filters reach, when needed, once per change; the
previous versions of a batch's changes in one read, `PreviousVersions`),
numbers the event for each of them in the ledger (a redelivered change keeps its numbers) and
publishes one notification job per subscription on `herald.notifications`, keyed by
subscription id, so that a subscription's jobs reach one dispatcher in order. Subscription
changes it consumes also start their lifecycle: a client's new or changed Subscription (status
`requested`) owes a handshake.
A change it cannot match (malformed, or an error in matching) is left to the bus: retried, then
quarantined (`events/quarantine`), so it neither blocks the stream nor vanishes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from events import ChangeEvent
from events.bus import Bus, Message, TopicSpec, Unprocessable
from fhirstore import Store, fhirjson
from fhirstore.wire import CHANGES_TOPIC, MATCHER_GROUP, NOTIFICATIONS_TOPIC
from subscriptions.focus import FocusKey, version_resource, versions_resources
from subscriptions.ledger import Ledger
from subscriptions.numbering import NewEvent
from subscriptions.registry import (
    FOLLOWED,
    SUBSCRIPTION,
    SubscriptionChange,
    SubscriptionRegistry,
)

log = logging.getLogger(__name__)


class NotificationJob(BaseModel):
    """A wake-up for the dispatcher of one subscription; what it owes is in the ledger."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    subscription_id: str = Field(alias="subscriptionId")
    event_number: int | None = Field(
        alias="eventNumber",
        description="The latest event numbered for it by a batch; null for a handshake",
    )
    retry_now: bool = Field(
        False,
        alias="retryNow",
        description="Retry a failing delivery now rather than after its wait (a client came back)",
    )


NOTIFICATION_JOBS = TopicSpec(
    NOTIFICATIONS_TOPIC,
    NotificationJob,
    "Internal: the matcher's wake-ups for the dispatchers, one per subscription per batch of "
    "changes (or handshake, or a WebSocket bind: retryNow). Key: the Subscription id, so one "
    "subscription's jobs reach one dispatcher in order. The notifications themselves are read "
    "from the database.",
)


def notification_job(
    subscription_id: str, event_number: int | None, *, retry_now: bool = False
) -> Message:
    job = NotificationJob(
        subscription_id=subscription_id, event_number=event_number, retry_now=retry_now
    )
    return Message(
        NOTIFICATIONS_TOPIC, subscription_id, job.model_dump_json(by_alias=True).encode()
    )


def read_job(message: Message) -> NotificationJob:
    return NotificationJob.model_validate_json(message.value)


class PreviousVersions:
    """The previous versions of a batch of changes, for the matching that asks for them.

    When the matching of a change first asks for its previous version, the previous versions
    of the later changes of the batch with the same resource type and interaction (which
    meet the same topics, so most likely ask too) are read with it, in one read. A version
    that read did not find is read alone (`version_resource`), so what matching sees, and
    what fails, is what reading each change's previous version on its own gives."""

    def __init__(self, store: Store, events: Sequence[ChangeEvent | None]) -> None:
        self._store = store
        self._events = events
        self._asked: set[FocusKey] = set()
        self._read: dict[FocusKey, dict[str, Any] | None] = {}

    async def load(self, position: int) -> dict[str, Any] | None:
        """The previous version of the change at `position`; None for a create, a deletion
        or a version that does not exist."""
        event = self._events[position]
        key = _previous_key(event)
        if event is None or key is None:
            return None
        if key not in self._asked:
            wanted = [k for k in self._alike(event, position) if k not in self._asked]
            self._asked.update(wanted)
            self._read.update(await versions_resources(self._store, wanted))
        if key in self._read:
            return self._read.pop(key)
        return await version_resource(self._store, *key)

    def _alike(self, event: ChangeEvent, position: int) -> list[FocusKey]:
        """The previous versions of the changes from `position` on of the same type and
        interaction as `event` (those whose previous versionId is a number)."""
        kind = (event.resource_type, event.interaction)
        return [
            (e.resource_type, e.id, int(e.previous_version_id))
            for e in self._events[position:]
            if e is not None
            and (e.resource_type, e.interaction) == kind
            and e.previous_version_id is not None
            and e.previous_version_id.isdecimal()
        ]


def _parsed(message: Message) -> ChangeEvent | ValueError:
    try:
        return ChangeEvent.from_json(message.value)
    except ValueError as error:
        return error


def _previous_key(event: ChangeEvent | None) -> FocusKey | None:
    if event is None or event.previous_version_id is None:
        return None
    return event.resource_type, event.id, int(event.previous_version_id)


class Matcher:
    def __init__(
        self, store: Store, ledger: Ledger, registry: SubscriptionRegistry, bus: Bus
    ) -> None:
        if not registry.index.matching:
            raise ValueError("the matcher needs a registry built with matching=True")
        self._store = store
        self._ledger = ledger
        self._registry = registry
        self._bus = bus
        bus.declare(NOTIFICATION_JOBS)

    def subscribe(self) -> None:
        self._bus.subscribe_batch(CHANGES_TOPIC, MATCHER_GROUP, self.handle)

    async def handle(self, messages: Sequence[Message]) -> None:
        """Match consecutive changes; number all their events in one transaction."""
        jobs: list[Message] = []
        numbered: list[NewEvent] = []
        # Subscriptions (re)registered by consecutive Subscription changes (a Bundle of them),
        # recorded together before anything else touches the ledger.
        registering: dict[str, str] = {}
        events = [_parsed(message) for message in messages]
        previous = PreviousVersions(
            self._store, [e if isinstance(e, ChangeEvent) else None for e in events]
        )
        for position, event in enumerate(events):
            if not isinstance(event, ChangeEvent):  # no retry mends it: the bus quarantines it
                raise Unprocessable("not a change event") from event
            if event.resource_type == SUBSCRIPTION and numbered:
                # Number what came before a Subscription's own change first (a deletion must
                # not overtake events matched ahead of it).
                await self._register(registering)
                jobs.extend(await self._number(numbered))
                numbered = []
            if event.resource_type != SUBSCRIPTION:
                await self._register(registering)
            # A change that fails is retried by the bus (the batch taken apart), and set
            # aside in the quarantine when it keeps failing: never skipped unseen.
            jobs.extend(await self._handle(event, numbered, registering, previous, position))
        await self._register(registering)
        jobs.extend(await self._number(numbered))
        if jobs:
            try:
                await self._bus.publish(jobs)
            except Exception as error:
                # Nothing is lost: the events are numbered in the ledger and the dispatchers'
                # sweep finds them; retrying the batch would only repeat its side effects.
                log.warning("matcher: could not publish %d notification jobs: %s", len(jobs), error)

    async def _register(self, registering: dict[str, str]) -> None:
        if registering:
            await self._ledger.register_many(registering)
            registering.clear()

    async def _number(self, numbered: list[NewEvent]) -> list[Message]:
        if not numbered:
            return []
        recorded = await self._ledger.record(numbered)
        # A job wakes the subscription's delivery, which sends everything owed: one per
        # subscription (naming its latest event) is enough.
        latest = {r.subscription_id: r.event_number for r in recorded}
        return [notification_job(sid, number) for sid, number in latest.items()]

    async def _handle(
        self,
        event: ChangeEvent,
        numbered: list[NewEvent],
        registering: dict[str, str],
        previous: PreviousVersions,
        position: int,
    ) -> list[Message]:
        await self._registry.catch_up(event.sequence)
        jobs: list[Message] = []
        if event.resource_type == SUBSCRIPTION:
            change = await self._registry.apply_event(event)
            if change is not None:
                jobs.extend(await self._start_lifecycle(change, registering))
        elif event.resource_type in FOLLOWED:  # topics, and ValueSets filters expand
            await self._registry.apply_event(event)

        async def load_previous() -> dict[str, Any] | None:
            return await previous.load(position)

        matches = await self._registry.index.match(
            event, load_previous, self._store.clock.now(), self._current
        )
        if matches and event.resource is not None:
            key = (event.resource_type, event.id, int(event.version_id))
            self._ledger.recent.add(key, event.resource)
        numbered.extend(
            NewEvent(
                m.subscription_id,
                event.event_id,
                event.resource_type,
                event.id,
                int(event.version_id),
                event.interaction,
                event.timestamp,
            )
            for m in matches
        )
        return jobs

    async def _current(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """What chained filters reach: the live current versions of `keys`, in one read."""
        found = await self._store.current_versions(keys)
        return {key: fhirjson.loads(v.body) for key, v in found.items() if v.body is not None}

    async def _start_lifecycle(
        self, change: SubscriptionChange, registering: dict[str, str]
    ) -> list[Message]:
        subscription_id = change.subscription_id
        if change.after is None:
            await self._register(registering)  # a registration earlier in the batch first
            await self._ledger.forget(subscription_id)
            return []
        if change.after.status == "off":
            registering[subscription_id] = "off"
            return []
        if change.after.status == "requested":
            registering[subscription_id] = "requested"
            return [notification_job(subscription_id, None)]
        return []  # active / error: Herald's own status write
