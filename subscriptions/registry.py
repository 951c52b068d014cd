"""The registry keeps this process's `SubscriptionIndex` in step with the stored Subscription and
SubscriptionTopic resources.

It loads everything at start and remembers the outbox position it has read through. Before the
matcher matches a change, `catch_up(sequence)` applies every Subscription and SubscriptionTopic
change committed before it, read from the outbox in commit order, so a change is matched against
exactly the subscriptions that existed when it was committed, whichever Kafka partition (and
matcher process) carried the Subscription's own change. On the embedded bus, where one matcher
sees every change in order, that costs no query at all.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

import orjson

from events import ChangeEvent
from fhirstore import FhirError, Store, entries_of_types, live_of_type, sequence_bounds
from subscriptions.channel import ChannelSupport
from subscriptions.fhirpath_budget import DEFAULT_RUNNER, FhirPathRunner
from subscriptions.index import SubscriptionIndex
from subscriptions.model import SubscriptionSpec, Topic
from subscriptions.subscription import parse_subscription
from subscriptions.topics import parse_topic

log = logging.getLogger(__name__)

SUBSCRIPTION = "Subscription"
SUBSCRIPTION_TOPIC = "SubscriptionTopic"
_WATCHED = (SUBSCRIPTION_TOPIC, SUBSCRIPTION)  # topics first: subscriptions refer to them


@dataclass(frozen=True, slots=True)
class SubscriptionChange:
    """A Subscription was created, changed (`before` set) or deleted (`after` None)."""

    subscription_id: str
    before: SubscriptionSpec | None
    after: SubscriptionSpec | None

    @property
    def reconfigured(self) -> bool:
        """Created, or changed in anything but its status."""
        if self.after is None:
            return False
        if self.before is None:
            return True
        return replace(self.before, status=self.after.status) != self.after


class SubscriptionRegistry:
    def __init__(
        self,
        store: Store,
        *,
        channels: ChannelSupport,
        fhirpath: FhirPathRunner = DEFAULT_RUNNER,
    ) -> None:
        self.index = SubscriptionIndex(fhirpath)
        self._store = store
        self._clock = store.clock
        self._channels = channels
        self._versions: dict[tuple[str, str], int] = {}
        self._topic_urls: dict[str, str] = {}  # SubscriptionTopic id -> url
        self._position = 0  # every change up to this outbox sequence is applied
        self._lock = asyncio.Lock()

    def find_topic(self, url: str) -> Topic | None:
        return self.index.topic(url)

    def parse(self, resource: dict[str, Any]) -> SubscriptionSpec:
        """Parse a Subscription against the known topics (raises FhirError if it is invalid)."""
        return parse_subscription(
            resource, self.find_topic, channels=self._channels, now=self._clock.now()
        )

    async def load(self) -> None:
        """Read every live topic and subscription (at start, or when the outbox was pruned
        past what this registry had read)."""
        async with self._store.engine.connect() as conn:
            _, newest = await sequence_bounds(conn)  # first: later changes are caught up
            for resource_type in _WATCHED:
                for version in await live_of_type(conn, resource_type):
                    self._apply(resource_type, version.id, version.version_id, version.body)
        self._position = max(self._position, newest)
        log.debug("subscription registry loaded", extra={"subscriptions": len(self.index)})

    def apply_event(self, event: ChangeEvent) -> SubscriptionChange | None:
        """Take in a change event of a Subscription or SubscriptionTopic.

        For the current version of a Subscription the change is returned even when a refresh
        (or an earlier delivery of the same event) applied it already, so that whoever consumes
        the event can act on it at least once; an outdated event gives None.
        """
        version = int(event.version_id)
        key = (event.resource_type, event.id)
        if self._versions.get(key, 0) == version and event.resource_type == SUBSCRIPTION:
            current = self.index.get(event.id)
            return SubscriptionChange(event.id, current, current)
        body = orjson.dumps(event.resource) if event.resource is not None else None
        return self._apply(event.resource_type, event.id, version, body)

    async def catch_up(self, sequence: int | None = None) -> None:
        """Apply the Subscription and SubscriptionTopic changes committed before the change
        at `sequence` (None: everything committed so far). The matcher keeps a registry of
        its own: others catching up to the newest change would have it match older changes
        against later subscriptions."""
        if sequence is not None and sequence <= self._position + 1:
            # Nothing can lie between what was read and this change (the in-order case).
            self._position = max(self._position, sequence)
            return
        async with self._lock:
            if sequence is not None and sequence <= self._position + 1:
                self._position = max(self._position, sequence)
                return
            await self._read_outbox(sequence)

    async def _read_outbox(self, sequence: int | None) -> None:
        async with self._store.engine.connect() as conn:
            oldest, newest = await sequence_bounds(conn)
            if sequence is not None:
                newest = min(newest, sequence - 1)
            if oldest > self._position + 1 and self._position > 0:
                pruned = True  # changes after our position may be gone: read everything
            else:
                pruned = False
                rows = await entries_of_types(conn, _WATCHED, after=self._position, through=newest)
                for row in rows:
                    self._apply(row.res_type, row.res_id, row.version_id, row.body)
        if pruned:
            await self.load()
        self._position = max(self._position, newest if sequence is None else sequence)

    def _apply(
        self, resource_type: str, resource_id: str, version: int, body: str | bytes | None
    ) -> SubscriptionChange | None:
        key = (resource_type, resource_id)
        if self._versions.get(key, 0) >= version:
            return None  # already applied (events and refreshes overlap)
        self._versions[key] = version
        resource = orjson.loads(body) if body is not None else None
        if resource_type == SUBSCRIPTION_TOPIC:
            self._apply_topic(resource_id, resource)
            return None
        if resource_type == SUBSCRIPTION:
            return self._apply_subscription(resource_id, resource)
        return None

    def _apply_topic(self, resource_id: str, resource: dict[str, Any] | None) -> None:
        old_url = self._topic_urls.pop(resource_id, None)
        if old_url is not None:
            self.index.remove_topic(old_url)
        if resource is None:
            return
        try:
            topic = parse_topic(resource)
        except FhirError as error:
            log.warning("ignoring invalid SubscriptionTopic/%s: %s", resource_id, error)
            return
        self._topic_urls[resource_id] = topic.url
        self.index.put_topic(topic)

    def _apply_subscription(
        self, resource_id: str, resource: dict[str, Any] | None
    ) -> SubscriptionChange | None:
        before = self.index.get(resource_id)
        after: SubscriptionSpec | None = None
        if resource is not None:
            try:
                after = self.parse(resource)
            except FhirError as error:
                log.warning("ignoring invalid Subscription/%s: %s", resource_id, error)
        if after is None:
            self.index.remove(resource_id)
        else:
            self.index.put(after)
        if before is None and after is None:
            return None
        return SubscriptionChange(resource_id, before, after)
