"""ValueSets in subscription filters: `code:in=<ValueSet>` and `code:not-in=<ValueSet>`.

A Subscription is parsed without a store (`subscription.py`): its `:in` / `:not-in` values are
`ValueSetRef`s. `expand` reads the ValueSets once, through the Subscription owner's reach (a
ValueSet the owner may not read is as unknown; no owner: every stored ValueSet), and puts the
expanded codes into the filters, so the matcher compares codes in memory with no read per
change. The codes of all the subscription's ValueSets together are bounded by
`HERALD_SEARCH_MAX_VALUESET_CODES` (`SearchLimits.max_valueset_codes`), as for one search. A
problem names the filter, its element and the ValueSet.

An `Expansion` also says which ValueSets it depends on (`sources`: `ValueSet/id` and canonical
urls, those named and those read, even when it failed), so that the registry expands again
when one of them is created, changed or deleted. One that cannot be expanded keeps its
`ValueSetRef`s and a `problem` saying why, which the index never matches (`index.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fhirstore import InvalidSearch, Store
from fhirstore.access import Access
from fhirstore.search import Criterion, expand_criteria, has_value_sets, reading
from fhirstore.search import values as v
from subscriptions.elements import invalid
from subscriptions.model import Filter, SubscriptionSpec
from subscriptions.subscription import CRITERIA


@dataclass(frozen=True, slots=True)
class Expansion:
    """A subscription with its filters' ValueSets expanded (or, with `problem`, not)."""

    spec: SubscriptionSpec
    sources: frozenset[str] = frozenset()
    problem: str | None = None
    path: str = CRITERIA  # the element of the filter that could not be expanded

    def required(self) -> SubscriptionSpec:
        """The expanded spec; 422 naming the filter (and the ValueSet) when it failed."""
        if self.problem is not None:
            raise invalid(self.path, self.problem)
        return self.spec


def uses_value_sets(spec: SubscriptionSpec) -> bool:
    return has_value_sets([f.criterion for f in spec.filters])


async def expand(store: Store, spec: SubscriptionSpec) -> Expansion:
    """`spec` with the ValueSets of its filters expanded, read as its owner may read them."""
    if not uses_value_sets(spec):
        return Expansion(spec)
    sources: set[str] = set()
    narrowing = reading(Access(spec.owner)) if spec.owner is not None else None
    limit = store.search_limits.max_valueset_codes
    filters: list[Filter] = []
    counted = 0
    async with store.engine.connect() as conn:
        for item in spec.filters:
            try:
                (criterion,) = await expand_criteria(
                    conn, [item.criterion], narrowing, store.search_limits, sources
                )
            except InvalidSearch as error:
                problem = f"filter {item.text!r}: {error.diagnostics}"
                return Expansion(spec, frozenset(sources), problem, item.path or CRITERIA)
            counted += _codes(criterion)
            if counted > limit:
                problem = (
                    f"filter {item.text!r}: the ValueSets of this Subscription's filters have "
                    f"{counted} codes or more, over the limit of {limit} per subscription "
                    "(HERALD_SEARCH_MAX_VALUESET_CODES); use smaller ValueSets"
                )
                return Expansion(spec, frozenset(sources), problem, item.path or CRITERIA)
            filters.append(replace(item, criterion=criterion))
    return Expansion(replace(spec, filters=tuple(filters)), frozenset(sources))


def _codes(criterion: Criterion) -> int:
    return sum(len(value.codes) for value in criterion.values if isinstance(value, v.CodeSetValue))
