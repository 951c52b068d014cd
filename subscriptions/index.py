"""`SubscriptionIndex`: the in-memory index of topics and subscriptions the matcher consults
for each change event, and the matching itself.

Per change, the work grows with what can match, not with how many subscriptions exist:
- topics are found through their triggers by (resource type, interaction), and a topic without
  subscriptions is skipped before anything is evaluated;
- a topic's trigger criteria are evaluated once per change, not once per subscription;
- within a topic, subscriptions are filed under index keys (`keys.py`): only those filed under
  a key the change's focus offers, and those without a key, are evaluated;
- chained filters (`patient.identifier=...`) are evaluated against the resources the focus
  refers to, read once per change for all subscriptions (`chains.py`): one batched read per
  chain level, never a query per subscription.

Filters with `:in` / `:not-in` hold their ValueSets' codes, expanded before the subscription
was put here (`value_sets.py`): they are compared in memory like any other token, and an `:in`
filter files the subscription under its codes. A subscription whose ValueSets could not be
expanded never matches (its owner sees why in `$status`).

The focus is the new version of the resource, or the previous version for a delete (loaded
through `load_previous`, at most once per change and only when something needs it). A
subscription that is `off` or whose `end` has passed never matches; filters that need values
do not match when the focus cannot be loaded.

An index built with `matching=False` keeps the topics and the subscriptions by id only, for
those that look subscriptions up but never match (the API and the dispatchers): it files no
subscription under keys, and `match` refuses to run on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from events import ChangeEvent
from fhirstore.access import Access
from fhirstore.search import Criterion, has_value_sets, matches_entries
from fhirstore.search import definitions as d
from subscriptions.chains import LoadCurrent
from subscriptions.criteria import (
    ChangeContext,
    FhirPathFailure,
    LoadPrevious,
    trigger_fires,
)
from subscriptions.fhirpath_budget import DEFAULT_RUNNER, FhirPathOverBudget, FhirPathRunner
from subscriptions.keys import (
    IndexKey,
    chained_event_keys,
    focus_types,
    is_type_filter,
    keyed_chain,
    subscription_keys,
)
from subscriptions.model import (
    ANY_RESOURCE,
    ResourceTrigger,
    SubscriptionSpec,
    Topic,
    classic_topic_url,
)
from subscriptions.subscription import classic_topic

log = logging.getLogger(__name__)

_CLASSIC_PREFIX = classic_topic_url("")


@dataclass(frozen=True, slots=True)
class Match:
    """A change concerns this subscription (through this topic)."""

    subscription_id: str
    topic_url: str


@dataclass(frozen=True, slots=True)
class MissedByBudget:
    """A topic's fhirPathCriteria spent its budget on a change: the subscriptions that would
    have been notified had it fired (live, filters holding, the owner may read the focus)."""

    topic: Topic
    trigger_index: int
    error: FhirPathOverBudget
    event: ChangeEvent
    subscription_ids: tuple[str, ...]


OnMissed = Callable[[MissedByBudget], None]
_NONE: Mapping[str, tuple[Criterion, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _Entry:
    """A subscription as filed: its focus types, its criteria per focus type (those on the
    focus itself, and the chained ones), its keys (and the chained criterion they come from,
    when they are chained keys)."""

    spec: SubscriptionSpec
    types: frozenset[str] | None  # None: every type of its topic
    criteria: Mapping[str, tuple[Criterion, ...]]
    chained: Mapping[str, tuple[Criterion, ...]]
    keys: tuple[IndexKey, ...]
    key_chain: Criterion | None
    access: Access | None  # the owner's (None: no owner, nothing to narrow)
    expanded: bool  # False: a ValueSet of its filters could not be expanded (never matches)

    @classmethod
    def of(cls, spec: SubscriptionSpec) -> _Entry:
        criteria: dict[str, tuple[Criterion, ...]] = {}
        chained: dict[str, tuple[Criterion, ...]] = {}
        for item in spec.filters:
            if not is_type_filter(item):
                into = chained if item.criterion.chain else criteria
                into[item.resource_type] = (*into.get(item.resource_type, ()), item.criterion)
        # Most subscriptions have no chained filter, some no filter at all: one empty mapping.
        criteria_or_none = criteria or _NONE
        chained_or_none = chained or _NONE
        types = focus_types(spec.filters)
        access = Access(spec.owner) if spec.owner is not None else None
        keys = subscription_keys(spec.filters, types)
        key_chain = keyed_chain(keys, spec.filters)
        expanded = not has_value_sets([f.criterion for f in spec.filters])
        return cls(
            spec, types, criteria_or_none, chained_or_none, keys, key_chain, access, expanded
        )

    def live(self, focus_type: str, now: datetime) -> bool:
        """Not off, not ended, its ValueSets expanded, and about this type (the keys mostly
        ensure the latter already)."""
        spec = self.spec
        if spec.status == "off" or (spec.end is not None and spec.end <= now):
            return False
        if not self.expanded:
            return False
        return self.types is None or focus_type in self.types


class _Bucket:
    """The subscriptions of one topic, by index key (those without a key on their own), and
    the chains behind its chained keys, by focus type and chain name (with how many
    subscriptions use each)."""

    def __init__(self) -> None:
        self.keyed: dict[IndexKey, dict[str, _Entry]] = {}
        self.unkeyed: dict[str, _Entry] = {}
        self.chains: dict[str, dict[str, tuple[Criterion, int]]] = {}
        self.size = 0

    def add(self, entry: _Entry) -> None:
        self.size += 1
        if not entry.keys:
            self.unkeyed[entry.spec.id] = entry
        for key in entry.keys:
            self.keyed.setdefault(key, {})[entry.spec.id] = entry
        if entry.key_chain is not None:
            focus, name, _ = entry.keys[0]
            by_name = self.chains.setdefault(focus, {})
            used = by_name.get(name, (entry.key_chain, 0))[1]
            by_name[name] = (entry.key_chain, used + 1)

    def remove(self, entry: _Entry) -> None:
        self.size -= 1
        self.unkeyed.pop(entry.spec.id, None)
        if entry.key_chain is not None:
            focus, name, _ = entry.keys[0]
            by_name = self.chains[focus]
            criterion, used = by_name[name]
            if used > 1:
                by_name[name] = (criterion, used - 1)
            else:
                del by_name[name]
                if not by_name:
                    del self.chains[focus]
        for key in entry.keys:
            filed = self.keyed.get(key, {})
            filed.pop(entry.spec.id, None)
            if not filed:
                self.keyed.pop(key, None)

    def candidates(self, keys: frozenset[IndexKey]) -> Iterator[_Entry]:
        yield from self.unkeyed.values()
        found: dict[str, _Entry] = {}  # a subscription may sit under several of the keys
        for key in keys:
            filed = self.keyed.get(key)
            if filed:
                found.update(filed)
        yield from found.values()


class SubscriptionIndex:
    """Topics and subscriptions of this process, and `match` for a change event.

    `examined` counts the subscriptions looked at (status, end, types, filters) over all
    changes so far; tests and the bench read it to see what the index saved.

    Client FHIRPath runs on `fhirpath` (under its budget); a topic whose trigger spent the
    budget on a change matches nothing, and `on_missed` is told which subscriptions missed it.
    """

    def __init__(
        self,
        fhirpath: FhirPathRunner = DEFAULT_RUNNER,
        on_missed: OnMissed | None = None,
        *,
        matching: bool = True,
    ) -> None:
        self.fhirpath = fhirpath
        self.on_missed = on_missed
        self.matching = matching
        self._topics: dict[str, Topic] = {}
        # (resource type or ANY_RESOURCE, interaction) -> topic url -> its triggers
        self._triggers: dict[tuple[str, str], dict[str, list[ResourceTrigger]]] = {}
        self._specs: dict[str, SubscriptionSpec] = {}
        self._entries: dict[str, _Entry] = {}  # filed for matching (none when not matching)
        self._buckets: dict[str, _Bucket] = {}
        self.examined = 0

    # -- topics -----------------------------------------------------------------------------------

    def put_topic(self, topic: Topic) -> None:
        self.remove_topic(topic.url)
        self._topics[topic.url] = topic
        for trigger in topic.triggers:
            for interaction in trigger.interactions:
                by_topic = self._triggers.setdefault((trigger.resource_type, interaction), {})
                by_topic.setdefault(topic.url, []).append(trigger)

    def remove_topic(self, url: str) -> None:
        topic = self._topics.pop(url, None)
        if topic is None:
            return
        for trigger in topic.triggers:
            for interaction in trigger.interactions:
                self._triggers.get((trigger.resource_type, interaction), {}).pop(url, None)

    def topic(self, url: str) -> Topic | None:
        """A known topic, or the implicit topic of classic criteria."""
        found = self._topics.get(url)
        if found is None and url.startswith(_CLASSIC_PREFIX):
            resource_type = url.removeprefix(_CLASSIC_PREFIX)
            if resource_type in d.resource_types():
                return classic_topic(resource_type)
        return found

    def topic_urls(self) -> list[str]:
        """The topics served (classic criteria's implicit topics left out)."""
        return [url for url in self._topics if not url.startswith(_CLASSIC_PREFIX)]

    # -- subscriptions ----------------------------------------------------------------------------

    def put(self, spec: SubscriptionSpec) -> None:
        self.remove(spec.id)
        self._specs[spec.id] = spec
        if self.matching:
            entry = _Entry.of(spec)
            self._entries[spec.id] = entry
            self._buckets.setdefault(spec.topic_url, _Bucket()).add(entry)
        if spec.classic and spec.topic_url not in self._topics:
            topic = self.topic(spec.topic_url)
            if topic is not None:
                self.put_topic(topic)

    def remove(self, subscription_id: str) -> None:
        self._specs.pop(subscription_id, None)
        entry = self._entries.pop(subscription_id, None)
        if entry is None:
            return
        url = entry.spec.topic_url
        self._buckets[url].remove(entry)
        if self._buckets[url].size == 0:
            del self._buckets[url]

    def get(self, subscription_id: str) -> SubscriptionSpec | None:
        return self._specs.get(subscription_id)

    def specs(self) -> list[SubscriptionSpec]:
        return list(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    # -- matching ---------------------------------------------------------------------------------

    async def match(
        self,
        event: ChangeEvent,
        load_previous: LoadPrevious,
        now: datetime,
        load_current: LoadCurrent | None = None,
    ) -> list[Match]:
        """The subscriptions this change concerns, once each, in topic order. `load_current`
        reads the resources chained filters reach (without it, chained filters never hold)."""
        if not self.matching:
            raise TypeError("this SubscriptionIndex was built with matching=False")
        context = ChangeContext(event, load_previous, self.fhirpath, load_current)
        found: list[Match] = []
        for url, triggers in self._topics_for(event).items():
            context.fhirpath_failures.clear()
            if await _any_fires(triggers, context):
                found.extend(await self._match_topic(url, context, now))
            elif context.fhirpath_failures:
                await self._failed(url, context, now)
        return found

    async def _failed(self, url: str, context: ChangeContext, now: datetime) -> None:
        """Log the topic's fhirPathCriteria that failed on this change; tell `on_missed` of
        the subscriptions one over budget kept from it."""
        topic = self.topic(url)
        if topic is None:
            return
        missed: tuple[str, ...] | None = None
        for failure in context.fhirpath_failures:
            index = topic.triggers.index(failure.trigger)
            over_budget = failure.over_budget
            if over_budget is None or self.on_missed is None:
                _log_failure(topic, index, failure, context.event)
                continue
            if missed is None:
                missed = tuple(
                    m.subscription_id for m in await self._match_topic(url, context, now)
                )
            self.on_missed(MissedByBudget(topic, index, over_budget, context.event, missed))

    def _topics_for(self, event: ChangeEvent) -> dict[str, list[ResourceTrigger]]:
        """Topics with subscriptions and a trigger on this change's type and interaction."""
        by_topic: dict[str, list[ResourceTrigger]] = {}
        for resource_type in (event.resource_type, ANY_RESOURCE):
            for url, triggers in self._triggers.get((resource_type, event.interaction), {}).items():
                if url in self._buckets:
                    by_topic.setdefault(url, []).extend(triggers)
        return by_topic

    async def _match_topic(self, url: str, context: ChangeContext, now: datetime) -> list[Match]:
        bucket = self._buckets.get(url)
        if bucket is None:  # its last subscription went while the triggers were evaluated
            return []
        keys = await context.focus_keys() if bucket.keyed else frozenset()
        chains = bucket.chains.get(context.event.resource_type)
        if chains:  # `chains` may change while the references are read: a copy
            keys |= await _chained_keys(dict(chains), context)
        # A list first: the index may change while a filter waits for the previous version.
        candidates = list(bucket.candidates(keys))
        self.examined += len(candidates)
        focus_type = context.event.resource_type
        passing = [
            entry
            for entry in candidates
            if entry.live(focus_type, now)
            and await _filters_hold(entry, context)
            and await _owner_may_read(entry, context)
        ]
        needed = [c.chain for entry in passing for c in entry.chained.get(focus_type, ())]
        if needed:
            await context.references.resolve(await context.focus_groups(), needed)
        return [Match(entry.spec.id, url) for entry in passing if _chains_hold(entry, context)]


def _log_failure(topic: Topic, index: int, failure: FhirPathFailure, event: ChangeEvent) -> None:
    log.warning(
        "fhirPathCriteria failed: no match",
        extra={
            "topic": topic.url,
            "trigger": index,
            "error": str(failure.error),
            "event_id": event.event_id,
            "resource": event.key,
        },
    )


async def _filters_hold(entry: _Entry, context: ChangeContext) -> bool:
    criteria = entry.criteria.get(context.event.resource_type)
    if not criteria:
        return True
    groups = await context.focus_groups()
    return groups is not None and matches_entries(groups, criteria)


async def _chained_keys(
    chains: dict[str, tuple[Criterion, int]], context: ChangeContext
) -> frozenset[IndexKey]:
    """The chained keys the change offers: read what the chains behind the bucket's chained
    keys reach from the focus (one read per level for them all), and take their codes."""
    references = context.references
    await references.resolve(await context.focus_groups(), [c.chain for c, _ in chains.values()])
    keys: set[IndexKey] = set()
    for name, (criterion, _) in chains.items():
        reached = [node.groups for node in references.reached(criterion.chain)]
        keys |= chained_event_keys(context.event.resource_type, name, criterion.param, reached)
    return frozenset(keys)


def _chains_hold(entry: _Entry, context: ChangeContext) -> bool:
    """Every chained criterion holds through what the subscription's owner may read."""
    return all(
        context.references.holds(criterion, entry.access)
        for criterion in entry.chained.get(context.event.resource_type, ())
    )


async def _owner_may_read(entry: _Entry, context: ChangeContext) -> bool:
    """Whether the subscription's owner may read the focus (the version before a delete): a
    change the owner may not see makes no notification at all."""
    if entry.access is None:
        return True
    event = context.event
    reach = entry.access.may(event.resource_type, "r")
    if reach is None:
        return False
    if reach.owner is not None:  # a Subscription as the focus: judged by its body
        return reach.admits(context.current or await context.previous())
    return reach.admits_entries(event.id, await context.focus_groups())


async def _any_fires(triggers: list[ResourceTrigger], context: ChangeContext) -> bool:
    for trigger in triggers:
        if await trigger_fires(trigger, context):
            return True
    return False
