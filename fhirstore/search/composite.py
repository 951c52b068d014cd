"""Composite search parameters: the index rows that pair two components of one element.

`code-value-quantity=http://loinc.org|8480-6$gt100|http://unitsofmeasure.org|mm[Hg]` matches
an Observation only when one element (the Observation itself, or one of its `component`s for
`component-code-value-quantity`, either for `combo-...`) has that code AND that value: a
blood pressure whose systolic component is 120 and diastolic 80 does not match
`component-code-value-quantity=8480-6$lt100`. So the pairing is made at write time, one
`search_index` row per (element, token of the first component, value of the second):

    param   the composite's code
    system  the first component's token system       code  its token code
    then, by the type of the second component:
    token      text = `code<TAB>system` of the second token (`KEY_SEPARATOR`)
    quantity   low / high = the value; text = `code<TAB>system` of the unit as written, and
               a second row in base units (fhirstore/search/ucum.py) whose text is
               `=` + the dimension (`CANONICAL`), when the unit is UCUM and convertible
    date, number  low / high
    string     text = the folded string (prefix match, as a string parameter)
    reference, uri  text = the reference (`Type/id` or URL) / the uri

Supported: composites of two components whose first is a token and whose second is one of
those types (every R4B composite except MolecularSequence's three-part coordinates and those
reaching outside the element with `%resource`); `query._param` refuses the others with a 400.
The rows of a stored resource are written with its other index rows; resources stored before
these rows existed get them when the index is rebuilt (fhirstore/reindex.py).

`combo-code-value-quantity` and `combo-code-value-concept` write no rows: they are the unions
of `code-value-*` (on the Observation) and `component-code-value-*` (on each component), whose
rows answer them (unions.py). A blood pressure panel with two components in mm[Hg] gets 4
composite rows (`component-code-value-quantity`, each component as written and in base units)
and none for `code-value-quantity` (the panel has no value of its own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhirstore.search import definitions as d
from fhirstore.search.datatypes import PARAM_TYPES, ValueConverter, value_converter
from fhirstore.search.index_entry import IndexEntry
from fhirstore.search.normalize import MAX_TEXT, clip
from fhirstore.search.paths import Member, Path, compile_plain, evaluable, walk

_HEAD = re.compile(r"[A-Z][A-Za-z]+")
KEY_SEPARATOR = "\t"  # FHIR codes and uris hold no whitespace
SECOND_TYPES = frozenset({d.TOKEN, d.QUANTITY, d.DATE, d.NUMBER, d.STRING, d.REFERENCE, d.URI})


def pair_key(system: str | None, code: str | None) -> str:
    """The text a (system, code) pair is indexed and searched as: code first, so a search by
    code alone is a prefix (`code<TAB>`), and `|code` (no system) is `code<TAB>` exactly."""
    return f"{code or ''}{KEY_SEPARATOR}{system or ''}"


def component_params(param: d.SearchParam) -> tuple[d.SearchParam, ...]:
    """The parameters a composite's components are (by their codes on the resource type its
    expression starts with); () when one is unknown."""
    head = _HEAD.match(param.expression)
    params = d.search_params(head.group(0) if head else "")
    found = tuple(params.get(code) for code, _ in param.components)
    return tuple(p for p in found if p is not None) if all(found) else ()


def _row(param: str, first: IndexEntry, second: IndexEntry, kind: str) -> IndexEntry | None:
    if first.code is None:
        return None
    text: str | None = None
    if kind == d.TOKEN:
        if second.code is None:
            return None
        text = pair_key(second.system, second.code)
    elif kind == d.QUANTITY:
        text = second.text if second.text else pair_key(second.system, second.code)
    elif kind == d.STRING:
        text = second.text
    elif kind in (d.REFERENCE, d.URI):
        text = second.code
    if text is None and second.low is None:
        return None
    return IndexEntry(
        param, first.system, first.code, clip(text, MAX_TEXT), second.low, second.high
    )


Converters = dict[str | None, ValueConverter]
# What one resource's composites share, computed once per resource: the elements a base path
# selects and a component's entries in one element, by (id of the node, id of the path or
# component: both are cached, so equal ones are the same object).
Memo = dict[tuple[int, int], list[Any]]


@dataclass(frozen=True, slots=True)
class _Component:
    code: str  # the component parameter's code (what its converter names the entries)
    kind: str  # its parameter type
    paths: tuple[Path, ...]  # relative to the element
    converters: Converters

    def entries(self, element: dict[str, Any], memo: Memo) -> list[IndexEntry]:
        key = (id(element), id(self))  # equal components are one object (`_component`)
        found = memo.get(key)
        if found is None:
            found = memo[key] = [
                entry
                for path in self.paths
                for kind, value in walk(element, path)
                for entry in self.converters[kind](self.code, value)
            ]
        return found


@dataclass(frozen=True, slots=True)
class _Part:
    """One part of the composite's expression: where its elements are, and its components."""

    base: Path | None  # None: the resource itself
    first: _Component
    second: _Component


@dataclass(slots=True)
class CompositeExtractor:
    """The rows of one composite parameter of one resource type (see the module docstring)."""

    code: str
    parts: tuple[_Part, ...]

    def entries(self, resource: dict[str, Any], memo: Memo) -> list[IndexEntry]:
        rows = []
        for part in self.parts:
            elements: list[Any] = [resource]
            if part.base is not None:
                key = (id(resource), id(part.base))
                if key not in memo:
                    memo[key] = [value for _, value in walk(resource, part.base)]
                elements = memo[key]
            for element in elements:
                if not isinstance(element, dict):
                    continue
                firsts = part.first.entries(element, memo)
                seconds = part.second.entries(element, memo) if firsts else []
                for first in firsts:
                    for second in seconds:
                        row = _row(self.code, first, second, part.second.kind)
                        if row is not None:
                            rows.append(row)
        return rows


@dataclass(slots=True)
class Composites:
    """Every supported composite of one resource type, evaluated together, so the elements
    and components they share (`code` in four of Observation's) are walked once."""

    extractors: tuple[CompositeExtractor, ...]
    code: str = "(composites)"  # for the log line of a failure
    roots: frozenset[str] | None = None  # evaluated on every resource of the type

    def entries(self, resource: dict[str, Any]) -> list[IndexEntry]:
        memo: Memo = {}
        return [row for each in self.extractors for row in each.entries(resource, memo)]


@cache
def _relative(
    resource_type: str, base_text: str, base: Path | None, expression: str
) -> tuple[Path, ...] | None:
    """A component's expression as paths relative to the element `base_text` selects."""
    paths = []
    for piece in evaluable(expression, resource_type).split("|"):
        piece = piece.strip().replace("ofType(DateTime)", "ofType(dateTime)")
        full = compile_plain(f"{base_text}.{piece}")
        if full is None or len(full) != 1:
            return None
        skip = 0 if base is None else len(base)
        if base is not None and full[0][:skip] != base:
            return None
        paths.append(full[0][skip:])
    return tuple(paths)


@cache
def _component(
    resource_type: str, base_text: str, base: Path | None, param: d.SearchParam, expression: str
) -> _Component | None:
    paths = _relative(resource_type, base_text, base, expression)
    if paths is None or not paths:
        return None
    kinds: set[str | None] = set()
    for path in paths:
        members = [step for step in path if isinstance(step, Member)]
        alternatives = members[-1].alternatives if members else ((None, None),)
        kinds.update(kind for _, kind in alternatives)
    param_type = PARAM_TYPES[param.type]
    converters = {kind: value_converter(param_type, kind) for kind in kinds}
    return _Component(param.code, param.type, paths, converters)


@cache
def _base(expression: str) -> Path | None:
    """The path of a composite's elements (one object per expression: `Memo` keys on it)."""
    compiled = compile_plain(expression)
    return compiled[0] if compiled is not None and len(compiled) == 1 else None


@cache
def composite_extractor(resource_type: str, code: str) -> CompositeExtractor | None:
    """The extractor of composite `code` on `resource_type`; None when it is not supported."""
    param = d.search_params(resource_type).get(code)
    if param is None or param.type != d.COMPOSITE:
        return None
    components = component_params(param)
    if len(components) != 2 or components[0].type != d.TOKEN:
        return None
    if components[1].type not in SECOND_TYPES:
        return None
    parts = []
    for base_text in (part.strip() for part in param.expression.split("|")):
        base: Path | None = None
        if base_text != resource_type:
            base = _base(base_text)
            if base is None:
                return None
        found = [
            _component(resource_type, base_text, base, component, expression)
            for component, (_, expression) in zip(components, param.components, strict=True)
        ]
        first, second = found
        if first is None or second is None:
            return None
        parts.append(_Part(base, first, second))
    return CompositeExtractor(code, tuple(parts))
