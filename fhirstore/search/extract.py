"""Extract the search index entries of a resource: FHIRPath (fhirpathpy, R4 model) + conversion.

Runs on every write, so the work per resource is kept small:
- each expression is compiled once (per resource type, on first use) and cached;
- an expression is only evaluated when one of its root elements (`Observation.value...` ->
  `value`, matching `valueQuantity`) is present in the resource;
- composite and special parameters are skipped;
- plain paths (`Patient.name.given`, `Observation.value.ofType(Quantity)`, ... the large
  majority) are walked directly over the JSON by `paths`; the rest goes through fhirpathpy.

Two rewrites make the official expressions evaluable by fhirpathpy: `(x as T)` / `x.as(T)`
become `x.ofType(T)` (the engine keeps the type name, which the conversion uses), and
`resolve()` is answered from the reference text alone (`where(resolve() is Patient)` keeps
references whose literal type is Patient) - the store never dereferences during indexing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode, TypeInfo
from fhirpathpy.models import models

from fhirstore.search import definitions as d
from fhirstore.search.datatypes import CONVERTERS, Converter, reference_target
from fhirstore.search.index_entry import IndexEntry
from fhirstore.search.paths import Node, Path, compile_plain, walk

__all__ = ["IndexEntry", "index_entries"]

log = logging.getLogger(__name__)

_SKIPPED_TYPES = frozenset({d.COMPOSITE, d.SPECIAL})
_AS_OPERATOR = re.compile(r"\(\s*([A-Za-z][\w.]*)\s+as\s+([A-Za-z]\w*)\s*\)")
_AS_FUNCTION = re.compile(r"\.as\(\s*([A-Za-z]\w*)\s*\)")


def _resolve(inputs: list[Any]) -> list[ResourceNode]:
    """`resolve()` without I/O: a stub resource of the type named by each literal reference."""
    resolved = []
    for item in inputs:
        reference = item.get("reference") if isinstance(item, dict) else item
        target = reference_target(reference) if isinstance(reference, str) else None
        if target is not None:
            stub = {"resourceType": target[0], "id": target[1]}
            resolved.append(ResourceNode.create_node(stub))
    return resolved


# fhirpathpy only installs the model for subtype checks (`ofType(uri)` also keeping a
# `canonical`) as a side effect of the first `is` / `as`; set it up front so results do not
# depend on which expression happened to run first.
TypeInfo.model = models["r4"]

_OPTIONS: dict[str, Any] = {"returnRawData": True}
_RESOLVE_OPTIONS: dict[str, Any] = {
    "returnRawData": True,
    "userInvocationTable": {"resolve": {"fn": _resolve, "arity": {0: []}}},
}


def evaluable(expression: str, resource_type: str) -> str:
    """The table expression in the form fhirpathpy evaluates (see the module docstring)."""
    expression = re.sub(r"^(?:Domain)?Resource\.", f"{resource_type}.", expression)
    expression = _AS_OPERATOR.sub(r"\1.ofType(\2)", expression)
    return _AS_FUNCTION.sub(r".ofType(\1)", expression)


# Functions and operators that give a value on an empty input (`x.exists()` is false).
_EMPTY_PRODUCERS = re.compile(
    r"\b(?:exists|empty|not|count|iif|allTrue|anyFalse)\(|\b(?:and|or|implies)\b|!=|="
)


def _roots(expression: str, resource_type: str) -> frozenset[str] | None:
    """The first element after the type in each union part; None if some part has none.

    Only meaningful when the expression is empty without them: `Patient.deceased.exists() and
    Patient.deceased != false` is false (indexed as a token) for a Patient without `deceased`.
    """
    roots = set()
    pattern = re.compile(rf"^\(*\s*{resource_type}\.(\w+)")
    for part in expression.split("|"):
        match = pattern.match(part.strip())
        if match is None:
            return None
        roots.add(match.group(1))
    return frozenset(roots)


@dataclass(slots=True)
class _Extractor:
    """One parameter of one resource type, compiled on first use."""

    code: str
    expression: str
    roots: frozenset[str] | None
    convert: Converter
    plain: tuple[Path, ...] | None
    _compiled: Callable[..., list[Any]] | None = None

    def values(self, resource: dict[str, Any]) -> list[Node]:
        """The (FHIR type or None, JSON value) pairs the expression selects."""
        if self.plain is not None:
            if len(self.plain) == 1:
                return walk(resource, self.plain[0])
            return [value for path in self.plain for value in walk(resource, path)]
        return [_typed(value) for value in self.fhirpath(resource)]

    def fhirpath(self, resource: dict[str, Any]) -> list[Any]:
        """The raw fhirpathpy result (always the engine, also for plain paths)."""
        if self._compiled is None:
            options = _RESOLVE_OPTIONS if "resolve()" in self.expression else _OPTIONS
            self._compiled = fhirpathpy.compile(self.expression, models["r4"], options)
        return self._compiled(resource)


@cache
def _extractors(resource_type: str) -> tuple[_Extractor, ...]:
    extractors = []
    for param in d.search_params(resource_type).values():
        if param.type in _SKIPPED_TYPES:
            continue
        expression = evaluable(param.expression, resource_type)
        plain = compile_plain(expression)
        empty_safe = plain is not None or not _EMPTY_PRODUCERS.search(expression)
        roots = _roots(expression, resource_type) if empty_safe else None
        convert = CONVERTERS[param.type]
        extractors.append(_Extractor(param.code, expression, roots, convert, plain))
    return tuple(extractors)


def _present(resource: dict[str, Any]) -> set[str]:
    """Element names present, with choice elements also under their root (`valueQuantity`)."""
    names = set(resource)
    names.update(_choice_root(key) for key in resource)
    return names


@lru_cache(maxsize=4096)
def _choice_root(key: str) -> str:
    """`value` for `valueQuantity`; the key itself when it has no upper-case letter."""
    for index, char in enumerate(key):
        if char.isupper():
            return key[:index]
    return key


def _typed(value: Any) -> tuple[str | None, Any]:
    if isinstance(value, ResourceNode):
        return value.path, value.data
    return None, value


def _entries(extractor: _Extractor, values: list[Node]) -> Iterator[IndexEntry]:
    for kind, data in values:
        if data is not None:
            yield from extractor.convert(extractor.code, kind, data)


def index_entries(resource: dict[str, Any]) -> list[IndexEntry]:
    """Every search index entry of `resource` (deduplicated, in parameter order).

    The store sets `id` and `meta.lastUpdated` first, so `_id` and `_lastUpdated` are included.
    A parameter whose expression fails on an odd resource is logged and skipped: indexing never
    fails a write.
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return []
    present = _present(resource)
    entries: dict[IndexEntry, None] = {}
    for extractor in _extractors(resource_type):
        if extractor.roots is not None and extractor.roots.isdisjoint(present):
            continue
        try:
            found = list(_entries(extractor, extractor.values(resource)))
        except Exception:
            log.warning(
                "search parameter %s.%s could not be evaluated",
                resource_type,
                extractor.code,
                exc_info=True,
            )
            continue
        for entry in found:
            entries[entry] = None
    return list(entries)
