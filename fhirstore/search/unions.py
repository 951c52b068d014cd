"""Union parameters: search parameters whose values are exactly those of other parameters
of the same resource type, together - answered from those parameters' index rows, never
indexed themselves.

In R4B these are Observation's `combo-*` parameters: `combo-code` is
`Observation.code | Observation.component.code`, the union of `code` and `component-code`;
`combo-code-value-quantity` pairs code and value on `Observation | Observation.component`, the
union of `code-value-quantity` (on the Observation) and `component-code-value-quantity` (on
each component). Writing their rows would repeat the members' rows under another name (11 of
the 27 rows of a blood-pressure panel), so a search on a union parameter looks at the rows of
its members instead (`compare.Plan.params`): the SQL EXISTS takes `param IN (...)`, the
in-memory matcher the entries of every member, with the same predicate on each row; `_sort`
takes the least (greatest) value over the members' rows, and the subscription index offers a
union's keys from its members' entries (subscriptions/keys.py).

Derived from the definitions, not listed: a parameter is a union when the parts of its
expression (split on `|`) are exactly the parts of two or more other parameters of the same
type and kind - for composites, with the same component expressions and component types, and
each member supported (`composite.composite_extractor`). The rows a member writes for an
element are then the rows the union parameter would write for it, so the results are the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from types import MappingProxyType

from fhirstore.search import definitions as d
from fhirstore.search.composite import component_params, composite_extractor

_HEAD = re.compile(r"[A-Z][A-Za-z]+")


def _parts(expression: str) -> frozenset[str]:
    return frozenset(part.strip() for part in expression.split("|"))


def _kind(param: d.SearchParam) -> tuple[object, ...]:
    """What must be equal for the rows of two parameters to be interchangeable."""
    if param.type != d.COMPOSITE:
        return (param.type,)
    types = tuple(p.type for p in component_params(param))
    return (param.type, tuple(expression for _, expression in param.components), types)


@cache
def _unions(resource_type: str) -> dict[str, tuple[str, ...]]:
    params = d.search_params(resource_type)
    found: dict[str, tuple[str, ...]] = {}
    for param in params.values():
        if param.type == d.SPECIAL or "|" not in param.expression:
            continue
        whole = _parts(param.expression)
        composite = param.type == d.COMPOSITE
        if composite and composite_extractor(resource_type, param.code) is None:
            continue
        members = tuple(
            other.code
            for other in params.values()
            if other.code != param.code
            and _kind(other) == _kind(param)
            and _parts(other.expression) < whole
            and (not composite or composite_extractor(resource_type, other.code) is not None)
        )
        covered = frozenset().union(*(_parts(params[code].expression) for code in members))
        if len(members) >= 2 and covered == whole:
            found[param.code] = tuple(sorted(members))
    return found


def union_members(param: d.SearchParam) -> tuple[str, ...]:
    """The codes of the parameters `param` is the union of; () when it is indexed itself."""
    head = _HEAD.search(param.expression)  # `(Observation.value as Quantity) | ...`
    return _unions(head.group(0)).get(param.code, ()) if head else ()


def searched_params(param: d.SearchParam) -> tuple[str, ...]:
    """The parameters whose index rows answer a search on `param`."""
    return union_members(param) or (param.code,)


def is_union(resource_type: str, code: str) -> bool:
    """True when `code` on `resource_type` writes no rows of its own (see the docstring)."""
    return code in _unions(resource_type)


def union_params(resource_type: str) -> Mapping[str, tuple[str, ...]]:
    """Every union parameter of `resource_type`, with its members (read-only, cached)."""
    return MappingProxyType(_unions(resource_type))
