"""Parse a FHIR search query string into a `SearchRequest` (criteria, paging, sort, includes).

`parse_search("Observation", [("code", "http://loinc.org|8867-4"), ("_count", "10")])`.
A comma inside one value is OR, a repeated parameter is AND. Anything the store cannot answer
faithfully raises `InvalidSearch` naming the parameter and what is accepted: the client gets a
400 rather than silently wider or narrower results. A search past its `SearchLimits` (OR
values, AND criteria, `_id` values, `_sort` keys, includes) is refused the same way, with the
limit named (fhirstore/search/limits.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from fhirstore.errors import InvalidSearch
from fhirstore.search import definitions as d
from fhirstore.search import values as v
from fhirstore.search.composite import component_params, composite_extractor
from fhirstore.search.definitions import SearchParam
from fhirstore.search.limits import DEFAULT_LIMITS, SearchLimits, over_limit
from fhirstore.validation.primitives import unstorable

TotalMode = Literal["none", "estimate", "accurate"]

# Modifiers each parameter type accepts (a reference also takes a resource type, `:Patient`).
MODIFIERS: dict[str, frozenset[str]] = {
    d.TOKEN: frozenset({"missing", "not", "text", "of-type", "in", "not-in"}),
    d.STRING: frozenset({"missing", "exact", "contains", "text"}),
    d.URI: frozenset({"missing", "contains", "above", "below"}),
    d.REFERENCE: frozenset({"missing"}),
    d.DATE: frozenset({"missing"}),
    d.NUMBER: frozenset({"missing"}),
    d.QUANTITY: frozenset({"missing"}),
    d.COMPOSITE: frozenset({"missing"}),
}
# The parameter types `_sort` orders by (one value per entry: `compare.sort_field`).
SORTABLE = frozenset({d.TOKEN, d.STRING, d.URI, d.REFERENCE, d.DATE, d.NUMBER, d.QUANTITY})
IGNORED = frozenset({"_format", "_pretty", "_summary", "_elements"})
UNSUPPORTED = frozenset(
    {"_list", "_text", "_content", "_query", "_filter", "_type", "_contained"} | {"_containedType"}
)


@dataclass(frozen=True, slots=True)
class Link:
    """One step of a chain, from the resources at hand to the `target` resources.

    Forward (`subject:Patient.name=x`): `param` is a reference parameter of the resources at
    hand, and the step reaches the `target` resources it points at. Reverse
    (`_has:Observation:patient:code=x`): `param` is a reference parameter of `target`, and the
    step reaches the `target` resources whose `param` points at the resources at hand.
    """

    param: SearchParam
    target: str
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Criterion:
    """One search parameter occurrence: matches when any of `values` (OR) matches.

    With a `chain`, `param`, `modifier` and `values` apply to the resources the last link
    reaches, and a resource matches when following the links from it reaches one that matches.
    """

    param: SearchParam
    modifier: str | None
    values: tuple[v.SearchValue, ...]
    chain: tuple[Link, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.values, tuple):  # accept a list, stay hashable
            object.__setattr__(self, "values", tuple(self.values))


@dataclass(frozen=True, slots=True)
class Include:
    """`_include=Source:param[:Target]` / `_revinclude=...`; `param` None means `*` (all).

    `iterate` (`_include:iterate`, `_revinclude:iterate`): applied to the matches and again to
    every resource included so far, until nothing new comes in (fhirstore/search/includes.py);
    its source type (of a `_revinclude:iterate`, its target type) need not be the searched type.
    """

    source_type: str
    param: SearchParam | None
    target_type: str | None = None
    iterate: bool = False

    def params(self) -> tuple[SearchParam, ...]:
        if self.param is not None:
            return (self.param,)
        found = d.search_params(self.source_type).values()
        return tuple(p for p in found if p.type == d.REFERENCE)


@dataclass(slots=True)
class SearchRequest:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 50
    offset: int = 0
    sort: list[tuple[SearchParam, bool]] = field(default_factory=list)  # (param, descending)
    include: list[Include] = field(default_factory=list)
    revinclude: list[Include] = field(default_factory=list)
    # None: not asked; the store counts when cheap (see sql.run_search).
    total: TotalMode | None = None
    limits: SearchLimits = DEFAULT_LIMITS  # what running it may cost (deadline, bytes, includes)


def _fail(name: str, message: str) -> InvalidSearch:
    return InvalidSearch(f"Search parameter '{name}': {message}", expression=[name])


def _param(resource_type: str, code: str, name: str) -> SearchParam:
    param = d.search_params(resource_type).get(code)
    if param is None:
        if code in UNSUPPORTED:
            raise _fail(name, "is not supported by this server")
        raise _fail(name, f"unknown search parameter {code!r} for {resource_type}")
    if param.type == d.SPECIAL:
        raise _fail(name, f"{param.type} search parameters are not supported")
    if param.type == d.COMPOSITE and composite_extractor(resource_type, code) is None:
        raise _fail(
            name,
            "this composite parameter is not supported (supported: two components, the "
            "first a token, within the element its expression selects)",
        )
    return param


def _check_modifier(param: SearchParam, modifier: str | None, name: str) -> None:
    if modifier is None:
        return
    allowed = MODIFIERS[param.type]
    if modifier in allowed:
        return
    if param.type == d.REFERENCE and modifier in d.resource_types():
        if param.targets and modifier not in param.targets:
            raise _fail(name, f"{modifier} is not a target of {param.code} ({param.targets})")
        return
    accepted = ", ".join(f":{m}" for m in sorted(allowed))
    if param.type == d.REFERENCE:
        accepted += ", :[ResourceType]"
    raise _fail(
        name, f"modifier :{modifier} is not supported on {param.type}; accepted: {accepted}"
    )


def _value_parser(
    param: SearchParam, modifier: str | None, now: datetime
) -> Callable[[str], v.SearchValue]:
    if modifier == "missing":
        return v.parse_missing
    if param.type == d.COMPOSITE:
        parsers = [_value_parser(part, None, now) for part in component_params(param)]
        return lambda text: v.parse_composite(text, parsers)
    if param.type == d.TOKEN:
        if modifier in ("in", "not-in"):
            return v.parse_value_set
        if modifier == "of-type":
            return v.parse_of_type
        return v.parse_string if modifier == "text" else v.parse_token
    if param.type == d.STRING:
        return v.parse_string
    if param.type == d.URI:
        return v.parse_uri
    if param.type == d.REFERENCE:
        return lambda text: v.parse_reference(text, param.targets, modifier)
    if param.type == d.DATE:
        return lambda text: v.parse_date(text, now)
    if param.type == d.NUMBER:
        return v.parse_number
    return v.parse_quantity


def parse_criterion(
    resource_type: str,
    name: str,
    value: str,
    *,
    now: datetime | None = None,
    limits: SearchLimits = DEFAULT_LIMITS,
) -> Criterion:
    """One `name=value` pair (name may carry a modifier, or be chained: `fhirstore.search.chain`)
    as a Criterion, of at most `limits.max_or_values` values."""
    problem = unstorable(name + value)
    if problem is not None:  # no stored value can match it, and PostgreSQL refuses to bind it
        raise _fail(name, f"the search {problem}")
    # The chain module builds on `Link` above, so it is imported when first needed.
    from fhirstore.search.chain import is_chained, parse_chain

    links: tuple[Link, ...] = ()
    tested = name
    if is_chained(name):  # `subject:Patient.name`, `_has:Observation:patient:code`
        chained = parse_chain(resource_type, name, limits)
        links, resource_type, tested = chained.links, chained.resource_type, chained.name
    code, _, modifier = tested.partition(":")
    param = _param(resource_type, code, name)
    _check_modifier(param, modifier or None, name)
    parse = _value_parser(param, modifier or None, now or datetime.now(UTC))
    most = limits.max_or_values
    try:
        texts = [value] if modifier == "missing" else v.split_escaped(value, ",", most)
    except v.TooManyParts as too_many:
        raise over_limit(
            name,
            too_many.count,
            most,
            "HERALD_SEARCH_MAX_OR_VALUES",
            "values joined by commas (OR) are limited; split them over several searches",
        ) from None
    try:
        parsed = tuple(parse(text) for text in texts if text != "")
    except ValueError as error:
        raise _fail(name, f"{error} (got {value!r})") from None
    if not parsed:
        raise _fail(name, "no value")
    return Criterion(param, modifier or None, parsed, links)


def _int(name: str, value: str) -> int:
    # ASCII digits only, and few enough to fit any database's integer (no "²", no 10**30).
    if not re.fullmatch(r"[0-9]{1,9}", value):
        raise _fail(name, f"expects a whole number from 0 to 999999999 (got {value!r})")
    return int(value)


def _sort(resource_type: str, value: str, most: int) -> list[tuple[SearchParam, bool]]:
    items = value.split(",")
    if len(items) > most:  # before looking any of them up
        raise over_limit(
            "_sort", len(items), most, "HERALD_SEARCH_MAX_SORT_KEYS", "sort by fewer keys"
        )
    order = []
    for item in items:
        code = item.strip()
        descending = code.startswith("-")
        param = _param(resource_type, code.lstrip("-"), "_sort")
        if param.type not in SORTABLE:
            raise _fail(
                "_sort",
                f"cannot sort by {param.code!r}, a {param.type} parameter (its parts have no "
                f"one order); sort by a parameter of type {', '.join(sorted(SORTABLE))}, or "
                f"_id or _lastUpdated",
            )
        order.append((param, descending))
    return order


def _include(resource_type: str, name: str, value: str) -> Include:
    base, _, modifier = name.partition(":")
    reverse = base == "_revinclude"
    if modifier not in ("", "iterate"):
        raise _fail(name, f":{modifier} is not supported; use {base} or {base}:iterate")
    iterate = modifier == "iterate"
    parts = value.split(":")
    if value == "*" and not reverse:
        if iterate:
            raise _fail(name, "expects SourceType:param or SourceType:* (got '*')")
        return Include(resource_type, None)
    if len(parts) not in (2, 3) or parts[0] not in d.resource_types():
        raise _fail(name, f"expects SourceType:param[:TargetType] (got {value!r})")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not reverse and not iterate and source != resource_type:
        raise _fail(
            name,
            f"source type must be {resource_type} (got {source}); "
            f"_include:iterate={value} follows it from included {source} resources",
        )
    if target is not None and target not in d.resource_types():
        raise _fail(name, f"unknown target type {target!r}")
    if reverse and not iterate and target is not None and target != resource_type:
        raise _fail(name, f"target type must be {resource_type} (got {target})")
    if code == "*":
        return Include(source, None, target, iterate)
    param = d.search_params(source).get(code)
    if param is None or param.type != d.REFERENCE:
        raise _fail(name, f"{source} has no reference search parameter {code!r}")
    return Include(source, param, target, iterate)


def parse_search(
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    default_count: int = 50,
    max_count: int = 1000,
    now: datetime | None = None,
    limits: SearchLimits = DEFAULT_LIMITS,
) -> SearchRequest:
    """Parse the query parameters of `GET [base]/[resource_type]?...`.

    `_count` above `max_count` is lowered to it (FHIR lets a server return fewer; the Bundle's
    links carry the count used). `now` (default: the system clock) anchors the `ap` prefix on
    dates. Raises InvalidSearch (HTTP 400) for anything unknown or malformed, SearchTooCostly
    (HTTP 400) for a search past `limits`.
    """
    if resource_type not in d.resource_types():
        raise InvalidSearch(f"Unknown resource type '{resource_type}'")
    request = SearchRequest(resource_type, count=min(default_count, max_count), limits=limits)
    for name, value in params:
        base = name.partition(":")[0]
        if base in IGNORED or value == "":
            continue
        if base == "_count":
            request.count = min(_int(name, value), max_count)
        elif base == "_offset":
            request.offset = _int(name, value)
        elif base == "_sort":
            request.sort.extend(_sort(resource_type, value, limits.max_sort_keys))
        elif base == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise _fail(name, f"expects none, estimate or accurate (got {value!r})")
            request.total = value  # type: ignore[assignment]
        elif base in ("_include", "_revinclude"):
            include = _include(resource_type, name, value)
            (request.revinclude if base == "_revinclude" else request.include).append(include)
        else:
            criterion = parse_criterion(resource_type, name, value, now=now, limits=limits)
            request.criteria.append(criterion)
        _check_limits(request, limits)
    return request


def check_criteria(criteria: Sequence[Criterion], limits: SearchLimits = DEFAULT_LIMITS) -> None:
    """Refuse (SearchTooCostly) more criteria (AND) or `_id` values than `limits` allow; call
    it as each criterion is parsed, so a huge query string is not parsed to the end first."""
    if len(criteria) > limits.max_and_criteria:
        raise over_limit(
            criteria[-1].param.code,
            len(criteria),
            limits.max_and_criteria,
            "HERALD_SEARCH_MAX_AND_CRITERIA",
            "search parameters (AND) are limited; narrow the search with fewer parameters",
        )
    ids = sum(len(c.values) for c in criteria if c.param.code == "_id")
    if ids > limits.max_id_values:
        raise over_limit(
            "_id",
            ids,
            limits.max_id_values,
            "HERALD_SEARCH_MAX_ID_VALUES",
            "ask for the resources in several searches",
        )


def _check_limits(request: SearchRequest, limits: SearchLimits) -> None:
    """Refuse, as soon as it is seen, a search past `limits`."""
    check_criteria(request.criteria, limits)
    if len(request.sort) > limits.max_sort_keys:
        raise over_limit(
            "_sort",
            len(request.sort),
            limits.max_sort_keys,
            "HERALD_SEARCH_MAX_SORT_KEYS",
            "sort by fewer keys",
        )
    includes = len(request.include) + len(request.revinclude)
    if includes > limits.max_includes:
        raise over_limit(
            "_include",
            includes,
            limits.max_includes,
            "HERALD_SEARCH_MAX_INCLUDES",
            "_include and _revinclude parameters are limited together; ask for fewer",
        )
