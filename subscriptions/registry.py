"""The registry keeps this process's `SubscriptionIndex` in step with the stored Subscription and
SubscriptionTopic resources.

It loads everything at start and remembers the outbox position it has read through. Before the
matcher matches a change, `catch_up(sequence)` applies every Subscription and SubscriptionTopic
change committed before it, read from the outbox in commit order, so a change is matched against
exactly the subscriptions that existed when it was committed, whichever Kafka partition (and
matcher process) carried the Subscription's own change. On the embedded bus, where one matcher
sees every change in order, that costs no query at all.

A stored Subscription that does not parse (any more) is never dropped silently: it is kept in
`unloaded` with the reason (`unloaded.py`), matched against nothing while it cannot be parsed,
and the `watcher` (the service marks it `error`, `unloaded_reporter.py`) is told. A stored
SubscriptionTopic that does not parse is kept in `unloaded_topics`. When a topic changes or
goes, the Subscriptions on it are parsed again from the version this registry applied (read
again from the store's history, so the registry holds no JSON), so they go into error, or load
again, at that point of the stream.

Filters with `:in` / `:not-in` are expanded as a Subscription is applied (`value_sets.py`,
through its owner's reach), so the index holds their codes. The registry follows ValueSet
changes too: when a ValueSet a subscription's expansion named or read is created, changed or
deleted, it expands that subscription again and swaps its filters in the index. One that can no
longer be expanded matches nothing, and `on_filter_problem` (the matcher's registry has one) is
told why, so that the subscription is set to `error` with that reason rather than go quiet.

A process keeps two registries: the matcher's, in step with the changes it matches, and the
one the API and the dispatchers read, caught up to the newest change whenever they ask. The
second needs no match index (`matching=False`), and the two keep one copy of a subscription
they both hold as the same (`shares_with`): each is still filled and changed on its own, at
its own position in the stream, and holds another copy whenever they differ.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import orjson

from events import ChangeEvent
from fhirstore import (
    FhirError,
    Store,
    entries_of_types,
    live_of_type,
    sequence_bounds,
    versions_in,
)
from fhirstore.search import value_set_sources
from subscriptions.builtin_topics import BUILTIN_TOPICS
from subscriptions.channel import ChannelSupport
from subscriptions.fhirpath_budget import DEFAULT_RUNNER, FhirPathRunner
from subscriptions.index import SubscriptionIndex
from subscriptions.metrics import SUBSCRIPTIONS_UNLOADED
from subscriptions.model import SubscriptionSpec, Topic
from subscriptions.subscription import parse_subscription
from subscriptions.topics import parse_topic
from subscriptions.unloaded import (
    KINDS,
    REASON_PREFIX,
    Unloaded,
    UnloadedTopic,
    UnloadedWatcher,
    diagnose,
)
from subscriptions.value_sets import expand, uses_value_sets

log = logging.getLogger(__name__)

SUBSCRIPTION = "Subscription"
SUBSCRIPTION_TOPIC = "SubscriptionTopic"
VALUE_SET = "ValueSet"
_WATCHED = (SUBSCRIPTION_TOPIC, SUBSCRIPTION)  # topics first: subscriptions refer to them
LOAD_PAGE = 1_000  # topics and subscriptions read at a time by `load`
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
        matching: bool = True,
        shares_with: SubscriptionRegistry | None = None,
    ) -> None:
        self.index = SubscriptionIndex(fhirpath, matching=matching)
        # A registry of the same process (each the other's): equal subscriptions held once.
        self._twin = shares_with
        if shares_with is not None:
            shares_with._twin = self
        self._store = store
        self._clock = store.clock
        self._channels = channels
        self._versions: dict[tuple[str, str], int] = {}
        self._topic_urls: dict[str, str] = {}  # SubscriptionTopic id -> url
        self.unloaded: dict[str, Unloaded] = {}
        self.unloaded_topics: dict[str, UnloadedTopic] = {}  # by SubscriptionTopic id
        self.watcher: UnloadedWatcher | None = None
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
        past what this registry had read), a page at a time, so that the stored JSON of all
        of them is never in memory at once."""
        async with self._store.engine.connect() as conn:
            _, newest = await sequence_bounds(conn)  # first: later changes are caught up
            for resource_type in _WATCHED:
                page = await live_of_type(conn, resource_type, limit=LOAD_PAGE)
                while page:
                    for version in page:  # expanding ValueSets reads the store (its own conn)
                        await self._apply(
                            resource_type, version.id, version.version_id, version.body
                        )
                    after = page[-1].id
                    page = await live_of_type(conn, resource_type, after=after, limit=LOAD_PAGE)
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
            if current is None and event.id in self.unloaded:
                return None  # not deleted: nothing for the matcher to start or forget
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
                self._put(await self._expanded(unexpanded))
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
            await self._apply_topic(resource_id, resource)
            return None
        if resource_type == SUBSCRIPTION:
            return await self._apply_subscription(resource_id, resource)
        if resource_type == VALUE_SET:
            await self._apply_value_set(resource_id, resource)
        return None

    def show_unloaded_in_metrics(self) -> None:
        """Have `herald_subscriptions_unloaded{kind}` count this registry's (one registry
        per process: the one the API reads)."""
        for kind in KINDS:
            SUBSCRIPTIONS_UNLOADED.labels(kind).set_function(partial(self._count_unloaded, kind))

    def _count_unloaded(self, kind: str) -> int:
        return sum(item.kind == kind for item in self.unloaded.values())

    async def assume_builtin_topics(self) -> None:
        """Take this version's built-in topics as if stored, re-checking their subscribers:
        what `herald serve` of this version (which writes them at start) makes of the stored
        Subscriptions. For a listing (`herald subscriptions unloaded`), never for a registry
        that serves."""
        for topic in BUILTIN_TOPICS:
            await self._apply_topic(str(topic["id"]), topic)

    async def _apply_topic(self, resource_id: str, resource: dict[str, Any] | None) -> None:
        old_url = self._topic_urls.pop(resource_id, None)
        if old_url is not None:
            self.index.remove_topic(old_url)
        broken = self.unloaded_topics.pop(resource_id, None)
        urls = {old_url, broken.url if broken else None}
        if resource is not None:
            try:
                topic = parse_topic(resource)
            except FhirError as error:
                self._topic_unloaded(resource_id, resource, error)
                urls.add(self.unloaded_topics[resource_id].url)
            else:
                self._topic_urls[resource_id] = topic.url
                self.index.put_topic(topic)
                urls.add(topic.url)
        await self._recheck({url for url in urls if url is not None})

    def _topic_unloaded(self, resource_id: str, resource: dict[str, Any], error: FhirError) -> None:
        url = resource.get("url")
        element = error.expression[0] if error.expression else "SubscriptionTopic"
        self.unloaded_topics[resource_id] = UnloadedTopic(
            resource_id, url if isinstance(url, str) else None, element, error.diagnostics
        )
        # The element only: the message may quote the topic's criteria (search values).
        log.warning(
            "SubscriptionTopic/%s cannot be loaded, nor the Subscriptions on it",
            resource_id,
            extra={"element": element},
        )

    async def _recheck(self, urls: set[str]) -> None:
        """Parse the Subscriptions on the topics `urls` again (one changed, or went)."""
        if not urls:
            return
        ids = [spec.id for spec in self.index.specs() if spec.topic_url in urls]
        ids += [i for i, item in self.unloaded.items() if item.spec.topic_url in urls]
        keys = [(SUBSCRIPTION, i, self._versions[SUBSCRIPTION, i]) for i in ids]
        async with self._store.engine.connect() as conn:
            found = await versions_in(conn, keys)
        for key in keys:
            version = found.get(key)
            if version is not None and version.body is not None:
                await self._apply_subscription(key[1], orjson.loads(version.body))

    async def _apply_subscription(
        self, resource_id: str, resource: dict[str, Any] | None
    ) -> SubscriptionChange | None:
        before = self.index.get(resource_id)
        after: SubscriptionSpec | None = None
        self._unexpanded.pop(resource_id, None)
        self._sources.pop(resource_id, None)
        was_unloaded = self.unloaded.pop(resource_id, None)
        if resource is not None:
            try:
                after = self.parse(resource)
            except FhirError as error:
                self._unloaded(resource_id, resource, error)
                self.index.remove(resource_id)
                return None  # not deleted: the matcher neither starts nor forgets anything
            after = await self._expanded(after)
        if after is None:
            self.index.remove(resource_id)
        else:
            after = self._put(after)
            self._loaded(after, resource or {}, was_unloaded)
        if before is None and after is None:
            return None
        return SubscriptionChange(resource_id, before, after)

    def _put(self, spec: SubscriptionSpec) -> SubscriptionSpec:
        """File `spec`, or the twin's equal one (it applied the same version alike): the
        values are frozen, so sharing one changes nothing the other registry sees."""
        held = self._twin.index.get(spec.id) if self._twin is not None else None
        if held is not None and held == spec:
            spec = held
        self.index.put(spec)
        return spec

    def _unloaded(self, resource_id: str, resource: dict[str, Any], error: FhirError) -> None:
        item = diagnose(
            resource_id,
            resource,
            error,
            topic_known=lambda url: self.find_topic(url) is not None,
            topic_problem=self._topic_problem,
            channels=self._channels,
        )
        self.unloaded[resource_id] = item
        # Kind, element and parameter names only: the message may quote filter values.
        log.debug(
            "Subscription/%s cannot be loaded",
            resource_id,
            extra={"kind": item.kind, "element": item.element, "parameters": item.parameters},
        )
        if self.watcher is not None:
            self.watcher.unloaded(item)

    def _loaded(
        self, spec: SubscriptionSpec, resource: dict[str, Any], was: Unloaded | None
    ) -> None:
        """Tell the watcher of a Subscription that could not be loaded (here, or in an
        earlier process: its stored error says so) and loads now."""
        error = resource.get("error")
        marked = isinstance(error, str) and error.startswith(REASON_PREFIX)
        if (marked or was is not None) and self.watcher is not None:
            self.watcher.loaded(spec)

    def _topic_problem(self, url: str) -> UnloadedTopic | None:
        return next((t for t in self.unloaded_topics.values() if t.url == url), None)

    async def _apply_value_set(self, resource_id: str, resource: dict[str, Any] | None) -> None:
        """Expand again the subscriptions whose expansion named or read this ValueSet (as it
        was, or as it is now)."""
        names = {f"{VALUE_SET}/{resource_id}"}
        if resource is not None:
            names |= value_set_sources(resource)
        for subscription_id, sources in list(self._sources.items()):
            unexpanded = self._unexpanded.get(subscription_id)
            if unexpanded is not None and sources & names:
                self._put(await self._expanded(unexpanded))

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
