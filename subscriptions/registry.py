"""The registry keeps this process's `SubscriptionIndex` in step with the stored Subscription and
SubscriptionTopic resources.

It loads everything at start and remembers the outbox position it has read through. Before the
matcher matches a change, `catch_up(sequence)` applies every Subscription and SubscriptionTopic
change committed before it, read from the outbox in commit order, so a change is matched against
exactly the subscriptions that existed when it was committed, whichever Kafka partition (and
matcher process) carried the Subscription's own change. On the embedded bus, where one matcher
sees every change in order, that costs no query at all.

Filters with `:in` / `:not-in` are expanded as a Subscription is applied (`value_sets.py`,
through its owner's reach), so the index holds their codes. The registry follows ValueSet
changes too: when a ValueSet a subscription's expansion named or read is created, changed or
deleted, it expands that subscription again and swaps its filters in the index. One that can no
longer be expanded matches nothing, and `on_filter_problem` (the matcher's registry has one) is
told why, so that the subscription is set to `error` with that reason rather than go quiet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from events import ChangeEvent
from fhirstore import FhirError, Store, entries_of_types, live_of_type, sequence_bounds
from fhirstore.search import value_set_sources
from subscriptions.channel import ChannelSupport
from subscriptions.fhirpath_budget import DEFAULT_RUNNER, FhirPathRunner
from subscriptions.index import SubscriptionIndex
from subscriptions.model import SubscriptionSpec, Topic
from subscriptions.subscription import parse_subscription
from subscriptions.topics import parse_topic
from subscriptions.value_sets import expand, uses_value_sets

log = logging.getLogger(__name__)

SUBSCRIPTION = "Subscription"
SUBSCRIPTION_TOPIC = "SubscriptionTopic"
VALUE_SET = "ValueSet"
_WATCHED = (SUBSCRIPTION_TOPIC, SUBSCRIPTION)  # topics first: subscriptions refer to them
FOLLOWED = (*_WATCHED, VALUE_SET)  # the changes the registry applies (ValueSets: not loaded)
# Told that a subscription's filters can no longer be expanded: (its id, the reason).
OnFilterProblem = Callable[[str, str], None]


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
        # Subscriptions with ValueSets in their filters: as parsed, and what they depend on.
        self._unexpanded: dict[str, SubscriptionSpec] = {}
        self._sources: dict[str, frozenset[str]] = {}
        self.on_filter_problem: OnFilterProblem | None = None
        self._position = 0  # every change up to this outbox sequence is applied
        self._lock = asyncio.Lock()

    def find_topic(self, url: str) -> Topic | None:
        return self.index.topic(url)

    def parse(self, resource: dict[str, Any]) -> SubscriptionSpec:
        """Parse a Subscription against the known topics (raises FhirError if it is invalid)."""
        return parse_subscription(
            resource, self.find_topic, channels=self._channels, now=self._clock.now()
        )

    async def accept(self, resource: dict[str, Any]) -> SubscriptionSpec:
        """`parse`, and the filters' ValueSets expanded as the owner may read them: 422 naming
        the filters and the ValueSet when one is unknown (or out of the owner's reach), not
        supported, or too large."""
        return (await expand(self._store, self.parse(resource))).required()

    async def load(self) -> None:
        """Read every live topic and subscription (at start, or when the outbox was pruned
        past what this registry had read)."""
        async with self._store.engine.connect() as conn:
            _, newest = await sequence_bounds(conn)  # first: later changes are caught up
            found = [
                (resource_type, version)
                for resource_type in _WATCHED
                for version in await live_of_type(conn, resource_type)
            ]
        for resource_type, version in found:  # expanding ValueSets reads the store
            await self._apply(resource_type, version.id, version.version_id, version.body)
        self._position = max(self._position, newest)
        log.debug("subscription registry loaded", extra={"subscriptions": len(self.index)})

    async def apply_event(self, event: ChangeEvent) -> SubscriptionChange | None:
        """Take in a change event of a Subscription, SubscriptionTopic or ValueSet.

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
        return await self._apply(event.resource_type, event.id, version, body)

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
                rows = await entries_of_types(conn, FOLLOWED, after=self._position, through=newest)
        if pruned:
            await self.load()
            # The ValueSet changes may be gone too: expand every subscription using one again.
            for unexpanded in list(self._unexpanded.values()):
                self.index.put(await self._expanded(unexpanded))
        else:
            for row in rows:
                await self._apply(row.res_type, row.res_id, row.version_id, row.body)
        self._position = max(self._position, newest if sequence is None else sequence)

    async def _apply(
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
            return await self._apply_subscription(resource_id, resource)
        if resource_type == VALUE_SET:
            await self._apply_value_set(resource_id, resource)
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

    async def _apply_subscription(
        self, resource_id: str, resource: dict[str, Any] | None
    ) -> SubscriptionChange | None:
        before = self.index.get(resource_id)
        after: SubscriptionSpec | None = None
        self._unexpanded.pop(resource_id, None)
        self._sources.pop(resource_id, None)
        if resource is not None:
            try:
                after = self.parse(resource)
            except FhirError as error:
                log.warning("ignoring invalid Subscription/%s: %s", resource_id, error)
            else:
                after = await self._expanded(after)
        if after is None:
            self.index.remove(resource_id)
        else:
            self.index.put(after)
        if before is None and after is None:
            return None
        return SubscriptionChange(resource_id, before, after)

    async def _apply_value_set(self, resource_id: str, resource: dict[str, Any] | None) -> None:
        """Expand again the subscriptions whose expansion named or read this ValueSet (as it
        was, or as it is now)."""
        names = {f"{VALUE_SET}/{resource_id}"}
        if resource is not None:
            names |= value_set_sources(resource)
        for subscription_id, sources in list(self._sources.items()):
            unexpanded = self._unexpanded.get(subscription_id)
            if unexpanded is not None and sources & names:
                self.index.put(await self._expanded(unexpanded))

    async def _expanded(self, spec: SubscriptionSpec) -> SubscriptionSpec:
        """`spec` with its filters' ValueSets expanded; as it is, with its `problem`, when they
        cannot be (the index never matches it), after telling `on_filter_problem` why."""
        if not uses_value_sets(spec):
            return spec
        expansion = await expand(self._store, spec)
        self._unexpanded[spec.id] = spec
        self._sources[spec.id] = expansion.sources
        if expansion.problem is None:
            return expansion.spec
        problem = filter_problem(expansion.problem)
        if spec.status != "off":
            log.warning("Subscription/%s: its filters' ValueSets cannot be expanded", spec.id)
            if self.on_filter_problem is not None:
                self.on_filter_problem(spec.id, problem)
        return replace(expansion.spec, problem=problem)


def filter_problem(problem: str) -> str:
    """The error a subscription shows when its filters' ValueSets cannot be expanded."""
    return (
        f"Subscription filters cannot be evaluated: {problem}. It notifies no one until the "
        "ValueSet can be expanded again (store or fix the ValueSet, or update the "
        "Subscription's filters)."
    )
