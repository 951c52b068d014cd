"""In-memory evaluation of search criteria against a resource (the subscription matcher's path).

Same semantics as the SQL search: both run the `compare.Plan` of each criterion. A chained
criterion (`Criterion.chain`) tests other resources than the one at hand, so it is refused
here (`ChainedCriterion`); only the database search answers it. Predicates
are compiled to closures once per criterion and cached. For many filters against one change,
compute the entries once (`index_entries` or `group_entries`) and call `matches_entries`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from fhirstore.search.chain import chain_text
from fhirstore.search.compare import All, AnyOf, Cmp, Pred, plan
from fhirstore.search.extract import IndexEntry, index_entries
from fhirstore.search.query import Criterion

Test = Callable[[IndexEntry], bool]
EntryGroups = Mapping[str, Sequence[IndexEntry]]
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _field_test(field: str, check: Callable[[Any], bool]) -> Test:
    def test(entry: IndexEntry) -> bool:
        value = getattr(entry, field)
        return value is not None and check(value)

    return test


def _cmp(cmp: Cmp) -> Test:
    field, op, wanted = cmp.field, cmp.op, cmp.value
    if op == "null":
        return lambda entry: getattr(entry, field) is None
    folded = wanted.translate(_ASCII_LOWER) if op == "icontains" else None
    checks: dict[str, Callable[[Any], bool]] = {
        "eq": lambda x: x == wanted,
        "in": lambda x: x in wanted,
        "lt": lambda x: x < wanted,
        "le": lambda x: x <= wanted,
        "gt": lambda x: x > wanted,
        "ge": lambda x: x >= wanted,
        "prefix": lambda x: x.startswith(wanted),
        "starts": lambda x: x.startswith(wanted),
        "nstarts": lambda x: not x.startswith(wanted),
        "contains": lambda x: wanted in x,
        # SQLite's lower() only folds ASCII; fold the same way here so both paths agree.
        "icontains": lambda x: folded in x.translate(_ASCII_LOWER),
    }
    return _field_test(field, checks[op])


def compile_pred(pred: Pred) -> Test:
    if isinstance(pred, Cmp):
        return _cmp(pred)
    tests = tuple(compile_pred(part) for part in pred.parts)
    if isinstance(pred, All):
        if len(tests) == 0:
            return lambda entry: True
        return lambda entry: all(test(entry) for test in tests)
    assert isinstance(pred, AnyOf)
    return lambda entry: any(test(entry) for test in tests)


class ChainedCriterion(ValueError):
    """A chained or `_has` criterion: it tests other resources than the one at hand, which
    entries of one resource cannot answer (the database search can)."""


@lru_cache(maxsize=16384)
def _compiled(criterion: Criterion) -> tuple[tuple[str, ...], bool, Test]:
    if criterion.chain:
        raise ChainedCriterion(
            f"Search parameter '{chain_text(criterion)}' follows references to other "
            "resources; it cannot be evaluated against one resource in memory"
        )
    criterion_plan = plan(criterion)
    return criterion_plan.params, criterion_plan.negate, compile_pred(criterion_plan.pred)


def group_entries(entries: Sequence[IndexEntry]) -> dict[str, list[IndexEntry]]:
    """Entries by parameter code (what `matches_entries` looks things up in)."""
    groups: dict[str, list[IndexEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.param, []).append(entry)
    return groups


def matches_entries(
    entries: Sequence[IndexEntry] | EntryGroups, criteria: Sequence[Criterion]
) -> bool:
    """True when the resource the entries came from satisfies every criterion (AND)."""
    groups = entries if isinstance(entries, Mapping) else group_entries(entries)
    for criterion in criteria:
        params, negate, test = _compiled(criterion)
        found = any(test(entry) for param in params for entry in groups.get(param, ()))
        if found == negate:
            return False
    return True


def matches(resource: dict[str, Any], criteria: Sequence[Criterion]) -> bool:
    """True when `resource` satisfies every criterion, with the semantics of the SQL search."""
    if not criteria:
        return True
    return matches_entries(index_entries(resource), criteria)
