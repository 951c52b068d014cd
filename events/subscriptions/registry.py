"""The registry keeps this process's `SubscriptionIndex` in step with the stored Subscription and
SubscriptionTopic resources.

It learns of changes three ways: a full load at start; the change events this process's matcher
consumes (exact and immediate on the embedded bus, where one matcher sees every change in commit
order); and a periodic look at what changed recently in the database, which brings changes that
another matcher process consumed (Kafka partitions) within `refresh_interval`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import and_, select

from events.model import ChangeEvent
from events.subscriptions.matcher import SubscriptionIndex
from events.subscriptions.model import SubscriptionSpec, Topic
from events.subscriptions.subscription import parse_subscription
from events.subscriptions.topics import parse_topic
from fhirstore.db.schema import resources
from fhirstore.errors import FhirError
from fhirstore.store import Store

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
        channel_types: frozenset[str],
        refresh_interval: float = 1.0,
        clock_skew: timedelta = timedelta(seconds=30),
    ) -> None:
        self.index = SubscriptionIndex()
        self._store = store
        self._clock = store.clock
        self._channel_types = channel_types
        self._refresh_interval = refresh_interval
        self._clock_skew = clock_skew
        self._versions: dict[tuple[str, str], int] = {}
        self._topic_urls: dict[str, str] = {}  # SubscriptionTopic id -> url
        self._since = self._clock.now()
        self._last_refresh = float("-inf")

    def find_topic(self, url: str) -> Topic | None:
        return self.index.topic(url)

    def parse(self, resource: dict[str, Any]) -> SubscriptionSpec:
        """Parse a Subscription against the known topics (raises FhirError if it is invalid)."""
        return parse_subscription(
            resource, self.find_topic, channel_types=self._channel_types, now=self._clock.now()
        )

    async def load(self) -> None:
        """Read every live topic and subscription (at start)."""
        started = self._clock.now()
        async with self._store.engine.connect() as conn:
            for resource_type in _WATCHED:
                rows = await conn.execute(
                    select(resources.c.res_id, resources.c.version_id, resources.c.body).where(
                        and_(resources.c.res_type == resource_type, resources.c.deleted.is_(False))
                    )
                )
                for row in rows:
                    self._apply(resource_type, row.res_id, row.version_id, row.body)
        self._since = started - self._clock_skew
        log.info("subscription registry loaded", extra={"subscriptions": len(self.index)})

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

    async def refresh_if_due(self, monotonic_now: float) -> list[SubscriptionChange]:
        if monotonic_now - self._last_refresh < self._refresh_interval:
            return []
        self._last_refresh = monotonic_now
        return await self.refresh()

    async def refresh(self) -> list[SubscriptionChange]:
        """Apply what changed in the database since the last look (with a margin for clock
        skew between writers and for transactions that committed late)."""
        started = self._clock.now()
        changes: list[SubscriptionChange] = []
        async with self._store.engine.connect() as conn:
            for resource_type in _WATCHED:
                rows = await conn.execute(
                    select(resources.c.res_id, resources.c.version_id, resources.c.body).where(
                        and_(
                            resources.c.res_type == resource_type,
                            resources.c.last_updated >= self._since,
                        )
                    )
                )
                for row in rows:
                    change = self._apply(resource_type, row.res_id, row.version_id, row.body)
                    if change is not None:
                        changes.append(change)
        self._since = started - self._clock_skew
        return changes

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
