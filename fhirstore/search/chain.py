"""Chained and reverse-chained parameter names: the `Link`s from the searched type to the type
whose parameter a criterion finally tests.

Forward (`subject:Patient.name`, `patient.identifier`): a reference parameter of the resources at
hand, an optional `:Type`, a `.`, then a name on that type. Reverse (`_has:Observation:patient:
code`): the resources at hand are pointed at by an `Observation` through its `patient`, and
`code` is tested on that Observation. Either may continue with another link
(`subject:Patient.general-practitioner:Practitioner.name`, `_has:Observation:patient:_has:...`,
`_has:Observation:subject:performer:Practitioner.name`), up to `SearchLimits.max_chain_depth`
links (`HERALD_SEARCH_MAX_CHAIN_DEPTH`).

Decisions where the FHIR search page leaves room:

- a reference parameter that may point at several types needs its `:Type`, unless exactly one
  of those types has the next parameter (the page: servers SHOULD reject a chain that could
  reach the same parameter on more than one type); `subject.name` on Observation is refused
  (Patient and Location both have `name`), `subject.gender` is not (only Patient has it);
- a parameter that may point at any type (`Reference(Any)`) always needs its `:Type`;
- `_has:Type:param` needs `param` to be a reference parameter of `Type` that may point at the
  resources at hand.

Anything else is an `InvalidSearch` (400) naming the parameter and what is accepted; a chain
longer than the limit is `SearchTooCostly` (400, too-costly) naming the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fhirstore.errors import InvalidSearch
from fhirstore.search import definitions as d
from fhirstore.search.definitions import SearchParam
from fhirstore.search.limits import SearchLimits, over_limit
from fhirstore.search.query import Criterion, Link

HAS = "_has"
_HAS_FORM = "_has:[Type]:[reference parameter]:[parameter], e.g. _has:Observation:patient:code"


@dataclass(frozen=True, slots=True)
class ChainedName:
    """A parameter name split into its links and the name (`code[:modifier]`) tested on the
    `resource_type` the last link reaches."""

    links: tuple[Link, ...]
    resource_type: str
    name: str


def is_chained(name: str) -> bool:
    """Whether `name` (as written, with any modifier) is a chained or `_has` parameter."""
    return "." in name or name.partition(":")[0] == HAS


def parse_chain(resource_type: str, name: str, limits: SearchLimits) -> ChainedName:
    """The links of the chained or `_has` parameter `name` on `resource_type`."""
    depth = name.count(".") + name.count(HAS + ":") + (name == HAS)
    if depth > limits.max_chain_depth:  # before looking any of them up
        raise over_limit(
            name,
            depth,
            limits.max_chain_depth,
            "HERALD_SEARCH_MAX_CHAIN_DEPTH",
            "a chain follows a limited number of references (each `.` and each `_has`); "
            "search the linked resources first, then by their ids",
        )
    links: list[Link] = []
    current, rest = resource_type, name
    while True:
        if rest.partition(":")[0] == HAS:
            link, rest = _reverse(current, rest, name)
        else:
            head, dot, tail = rest.partition(".")
            if not dot:
                return ChainedName(tuple(links), current, rest)
            if not tail:
                raise _fail(name, f"expects a search parameter of the linked type after {head}.")
            link = _forward(current, head, tail, name)
            rest = tail
        links.append(link)
        current = link.target


def _listed(types: Sequence[str], most: int = 6) -> str:
    """`A, B, C` (the first `most`, then how many more)."""
    shown = ", ".join(types[:most])
    return shown if len(types) <= most else f"{shown} and {len(types) - most} more"


def _fail(name: str, message: str) -> InvalidSearch:
    return InvalidSearch(f"Search parameter '{name}': {message}", expression=[name])


def _reference_param(resource_type: str, code: str, name: str) -> SearchParam:
    param = d.search_params(resource_type).get(code)
    if param is not None and param.type == d.REFERENCE:
        return param
    accepted = sorted(
        p.code for p in d.search_params(resource_type).values() if p.type == d.REFERENCE
    )
    if param is None:
        problem = f"unknown search parameter {code!r} for {resource_type}"
    else:
        problem = f"{code!r} is a {param.type} parameter of {resource_type}, not a reference"
    raise _fail(
        name,
        f"{problem}; a chain follows a reference parameter "
        f"({resource_type} has: {', '.join(accepted) or 'none'})",
    )


def _reverse(current: str, rest: str, name: str) -> tuple[Link, str]:
    """The `_has:Type:param:` link at the start of `rest`, and what follows it."""
    parts = rest.split(":", 3)
    if len(parts) < 4 or not all(parts[1:]):
        raise _fail(name, f"expects {_HAS_FORM}")
    source, code, tail = parts[1], parts[2], parts[3]
    if source not in d.resource_types():
        raise _fail(name, f"unknown resource type {source!r} in _has; expects {_HAS_FORM}")
    param = _reference_param(source, code, name)
    if param.targets and current not in param.targets:
        raise _fail(
            name,
            f"{source}'s {code} never points at {current} (it points at {_listed(param.targets)})",
        )
    return Link(param, source, reverse=True), tail


def _forward(current: str, head: str, tail: str, name: str) -> Link:
    """The `code[:Type]` link `head`, followed by `tail`."""
    code, _, explicit = head.partition(":")
    param = _reference_param(current, code, name)
    if explicit:
        if explicit not in d.resource_types():
            raise _fail(name, f"unknown resource type {explicit!r} after {code}:")
        if param.targets and explicit not in param.targets:
            raise _fail(name, f"{explicit} is not a target of {code} ({_listed(param.targets)})")
        return Link(param, explicit)
    return Link(param, _implied_target(param, tail, name))


def _implied_target(param: SearchParam, tail: str, name: str) -> str:
    """The one type `param` points at that has the parameter `tail` starts with."""
    code = param.code
    if len(param.targets) == 1:
        return param.targets[0]
    if not param.targets:
        raise _fail(name, f"{code} may point at any resource type; name one: {code}:[Type].{tail}")
    following = tail.partition(".")[0].partition(":")[0]
    having = [
        target
        for target in param.targets
        if following == HAS or following in d.search_params(target)
    ]
    if not having:
        raise _fail(
            name,
            f"none of the types {code} points at ({_listed(param.targets)}) has a search "
            f"parameter {following!r}",
        )
    if len(having) > 1:
        raise _fail(
            name,
            f"the chained {code} points at several types with {following!r} "
            f"({_listed(having)}); "
            f"name one: {code}:{having[0]}.{tail}",
        )
    return having[0]


def chain_text(criterion: Criterion) -> str:
    """The parameter name of `criterion` in its explicit form (`subject:Patient.name`,
    `_has:Observation:patient:code:not`), for messages."""
    parts = [
        f"{HAS}:{link.target}:{link.param.code}:"
        if link.reverse
        else f"{link.param.code}:{link.target}."
        for link in criterion.chain
    ]
    modifier = f":{criterion.modifier}" if criterion.modifier else ""
    return "".join(parts) + criterion.param.code + modifier
