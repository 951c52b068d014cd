"""Criteria: parsing query strings and FHIRPath, and evaluating a topic's resource triggers.

- `parse_query` turns `status:not=ready&code=1234` into ANDed search criteria (the search
  code's own parser, so topics, filters and `GET` searches agree).
- fhirPathCriteria are a client's FHIRPath: compiled once per expression and evaluated under
  the budget, off the event loop (`fhirpath_budget.py`). One that fails or spends its budget is
  no match, and is noted on the `ChangeContext` for whoever reports it.
- `ChangeContext` is one change as the matcher sees it: the new version, the previous version
  (loaded at most once, and only when something needs it), their index entries (computed
  once per change) and the resources chained filters reach from the focus (`chains.py`,
  read once per change).
- `trigger_fires` evaluates a resource trigger's queryCriteria and fhirPathCriteria.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from events import ChangeEvent
from fhirstore import InvalidSearch
from fhirstore.search import (
    Criterion,
    EntryGroups,
    check_criteria,
    group_entries,
    has_value_sets,
    index_entries,
    matches_entries,
    parse_criterion,
)
from subscriptions.chains import LoadCurrent, References
from subscriptions.elements import invalid
from subscriptions.fhirpath_budget import (
    DEFAULT_RUNNER,
    FhirPathError,
    FhirPathOverBudget,
    FhirPathRunner,
    compile_client_fhirpath,
)
from subscriptions.keys import IndexKey, event_keys
from subscriptions.model import QueryCriteria, ResourceTrigger

log = logging.getLogger(__name__)

Resource = dict[str, Any]
LoadPrevious = Callable[[], Awaitable[Resource | None]]


# -- query strings --------------------------------------------------------------------------------


def split_query(query: str, path: str) -> list[tuple[str, str]]:
    """`a=1&b:not=2` as percent-decoded (name, value) pairs; `+` stays a plus sign."""
    pairs = []
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        if not equals or not name:
            raise invalid(path, f"expects name=value pairs joined by & (got {part!r})")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def criterion(
    resource_type: str, name: str, value: str, path: str, now: datetime | None
) -> Criterion:
    """One parameter as a Criterion; an unknown parameter or bad value names `path`. An
    `:in` / `:not-in` value stays a `ValueSetRef` (`value_sets.py` expands it)."""
    try:
        return parse_criterion(resource_type, name, value, now=now)
    except InvalidSearch as error:
        raise invalid(path, f"{error.diagnostics} (on {resource_type})") from None


def parse_query(
    resource_type: str, query: str, path: str, *, now: datetime | None = None
) -> tuple[Criterion, ...]:
    """`[Type?]a=1&b=2` (ANDed) on `resource_type`, for a topic's queryCriteria: those test the
    changed resource's own versions (previous and current), so a chained or `_has` parameter,
    which tests other resources, is refused naming `path`; so is `:in` / `:not-in` (a topic has
    no owner to read its ValueSets as, and nothing expands them)."""
    if "?" in query.partition("=")[0]:
        named, _, query = query.partition("?")
        if named != resource_type:
            raise invalid(path, f"is about {named}, but the trigger is on {resource_type}")
    parsed: list[Criterion] = []
    for name, value in split_query(query, path):
        parsed.append(criterion(resource_type, name, value, path, now))
        if has_value_sets(parsed[-1:]):
            raise invalid(
                path,
                f"{name}: :in and :not-in are not accepted in queryCriteria (a Subscription's "
                "filters accept them)",
            )
        if parsed[-1].chain:
            raise invalid(
                path,
                f"{name!r} follows references to other resources (a chained or _has "
                "parameter); queryCriteria test the changed resource's own previous and "
                "current versions, so use its own parameters",
            )
        try:  # the limits of a search hold for criteria and filters too
            check_criteria(parsed)
        except InvalidSearch as error:
            raise invalid(path, f"{error.diagnostics} (on {resource_type})") from None
    return tuple(parsed)


# -- FHIRPath -------------------------------------------------------------------------------------


def _truthy(result: list[Any]) -> bool:
    """FHIRPath singleton evaluation of a collection as a boolean."""
    return len(result) == 1 and result[0] is not False


@dataclass(frozen=True, slots=True)
class FhirPathFailure:
    """A trigger's fhirPathCriteria failed, or spent its budget, on this change (and so did
    not fire). `error` names the kind of failure, never a value of the resource."""

    trigger: ResourceTrigger
    error: FhirPathError

    @property
    def over_budget(self) -> FhirPathOverBudget | None:
        return self.error if isinstance(self.error, FhirPathOverBudget) else None


# -- one change -----------------------------------------------------------------------------------


class ChangeContext:
    """One change event as the matcher evaluates it, with lazy and memoized views.

    The focus is the new version, or the previous one for a delete. `load_previous` is called
    at most once, and only when a trigger or a filter needs the previous version.
    """

    def __init__(
        self,
        event: ChangeEvent,
        load_previous: LoadPrevious,
        fhirpath: FhirPathRunner = DEFAULT_RUNNER,
        load_current: LoadCurrent | None = None,
    ) -> None:
        self.event = event
        self.fhirpath = fhirpath
        self.references = References(load_current)
        self.fhirpath_failures: list[FhirPathFailure] = []
        self._load_previous = load_previous
        self._previous: Resource | None = None
        self._previous_loaded = event.interaction == "create"
        self._groups: dict[str, EntryGroups | None] = {}
        self._focus_keys: frozenset[IndexKey] | None = None

    @property
    def current(self) -> Resource | None:
        return self.event.resource if self.event.interaction != "delete" else None

    async def previous(self) -> Resource | None:
        if not self._previous_loaded:
            self._previous_loaded = True
            self._previous = await self._load_previous()
        return self._previous

    def current_groups(self) -> EntryGroups | None:
        if "current" not in self._groups:
            self._groups["current"] = _groups(self.current)
        return self._groups["current"]

    async def previous_groups(self) -> EntryGroups | None:
        if "previous" not in self._groups:
            self._groups["previous"] = _groups(await self.previous())
        return self._groups["previous"]

    async def focus_groups(self) -> EntryGroups | None:
        """Index entries of the focus; None when the focus is not available."""
        if self.event.interaction == "delete":
            return await self.previous_groups()
        return self.current_groups()

    async def focus_keys(self) -> frozenset[IndexKey]:
        if self._focus_keys is None:
            groups = await self.focus_groups()
            self._focus_keys = event_keys(self.event.resource_type, groups)
        return self._focus_keys


def _groups(resource: Resource | None) -> EntryGroups | None:
    return None if resource is None else group_entries(index_entries(resource))


# -- resource triggers ----------------------------------------------------------------------------


async def trigger_fires(trigger: ResourceTrigger, context: ChangeContext) -> bool:
    """queryCriteria and fhirPathCriteria both hold (an absent one holds)."""
    if trigger.query is not None and not await _query_holds(trigger.query, context):
        return False
    return trigger.fhirpath is None or await _fhirpath_holds(trigger, trigger.fhirpath, context)


async def _query_holds(query: QueryCriteria, context: ChangeContext) -> bool:
    """R4B semantics: `requireBoth` needs both tests to pass, otherwise either suffices.

    On a create the previous test is `resultForCreate`, on a delete the current test is
    `resultForDelete`; a side with no criteria (or no result for the missing version) takes
    no part. A version that cannot be loaded fails its test.
    """
    sides = [
        result
        for result in (await _previous_test(query, context), _current_test(query, context))
        if result is not None
    ]
    if not sides:
        return True
    return all(sides) if query.require_both else any(sides)


async def _previous_test(query: QueryCriteria, context: ChangeContext) -> bool | None:
    if query.previous is None:
        return None
    if context.event.interaction == "create":
        return _result(query.result_for_create)
    groups = await context.previous_groups()
    return groups is not None and matches_entries(groups, query.previous)


def _current_test(query: QueryCriteria, context: ChangeContext) -> bool | None:
    if query.current is None:
        return None
    if context.event.interaction == "delete":
        return _result(query.result_for_delete)
    groups = context.current_groups()
    return groups is not None and matches_entries(groups, query.current)


def _result(when: str | None) -> bool | None:
    return None if when is None else when == "test-passes"


async def _fhirpath_holds(
    trigger: ResourceTrigger, expression: str, context: ChangeContext
) -> bool:
    needs_previous = context.event.interaction == "delete" or "%previous" in expression
    previous = await context.previous() if needs_previous else None
    current = context.current
    focus = current if current is not None else previous
    variables = {
        "previous": previous if previous is not None else [],
        "current": current if current is not None else [],
    }
    try:
        compiled = compile_client_fhirpath(expression)
        return _truthy(await context.fhirpath.evaluate(compiled, focus or {}, variables))
    except FhirPathError as error:  # a topic's expression must never stop the stream
        context.fhirpath_failures.append(FhirPathFailure(trigger, error))
        return False
