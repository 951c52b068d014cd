"""Extract the search index entries of a resource: FHIRPath (fhirpathpy, R4 model) + conversion.

Runs on every write, so the work per resource is kept small:
- each expression is compiled once (per resource type, on first use) and cached;
- special parameters are skipped, and so are union parameters (`unions`: Observation's
  `combo-*`, answered from their members' rows); composites are paired per element
  (`composite`);
- plain paths (`Patient.name.given`, `Observation.value.ofType(Quantity)`, ... the large
  majority) are walked directly over the JSON by `paths`, and each value is converted by the
  converter of the type the model gives it, chosen at compile time (`datatypes.value_converter`);
- the rest goes through fhirpathpy, only when one of the expression's root elements
  (`Observation.value...` -> `value`, matching `valueQuantity`) is present in the resource.

Two rewrites make the official expressions evaluable by fhirpathpy: `(x as T)` / `x.as(T)`
become `x.ofType(T)` (the engine keeps the type name, which the conversion uses), and
`resolve()` is answered from the reference text alone (`where(resolve() is Patient)` keeps
references whose literal type is Patient) - the store never dereferences during indexing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode, TypeInfo
from fhirpathpy.models import models

from fhirstore.search import definitions as d
from fhirstore.search.composite import Composites, composite_extractor
from fhirstore.search.datatypes import PARAM_TYPES, ParamType, reference_target, value_converter
from fhirstore.search.index_entry import ON_RESOURCES, IndexEntry
from fhirstore.search.paths import Member, Path, Step, compile_plain, evaluable, walk
from fhirstore.search.unions import is_union

__all__ = ["IndexEntry", "changed_entries", "index_entries"]

log = logging.getLogger(__name__)


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
# (fhirpathpy declares the attribute as a bare None, hence the ignore.)
TypeInfo.model = models["r4"]  # type: ignore[assignment]

_OPTIONS: dict[str, Any] = {"returnRawData": True}
_RESOLVE_OPTIONS: dict[str, Any] = {
    "returnRawData": True,
    "userInvocationTable": {"resolve": {"fn": _resolve, "arity": {0: []}}},
}


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


Entries = Callable[[dict[str, Any]], list[IndexEntry]]


@dataclass(slots=True)
class _Extractor:
    """One parameter of one resource type, compiled on first use of the type."""

    code: str
    expression: str
    roots: frozenset[str] | None  # for the engine: skip when none of these is present
    param_type: ParamType
    plain: tuple[Path, ...] | None
    entries: Entries = field(init=False)  # the resource's entries for this parameter
    # The resource's keys its entries depend on (None: any, as far as is known here).
    reads: frozenset[str] | None = field(init=False)
    _compiled: Callable[..., list[Any]] | None = None

    def __post_init__(self) -> None:
        self.entries = self.engine_entries if self.plain is None else self._plain_entries()
        self.reads = _first_keys(self.plain)

    def _plain_entries(self) -> Entries:
        """Walk the paths and convert each value with the converter of its model type."""
        assert self.plain is not None
        code, paths = self.code, self.plain
        converters = {kind: value_converter(self.param_type, kind) for kind in _kinds(paths)}
        if len(paths) == 1 and len(converters) == 1 and all(_single(step) for step in paths[0]):
            # Most parameters (`Task.status`, `Resource.meta.lastUpdated`): a chain of keys.
            keys = [step.alternatives[0][0] for step in paths[0] if isinstance(step, Member)]
            (convert,) = converters.values()

            def chained(resource: dict[str, Any]) -> list[IndexEntry]:
                values: list[Any] = [resource]
                for key in keys:
                    found: list[Any] = []
                    for value in values:
                        item = value.get(key) if isinstance(value, dict) else None
                        if type(item) is list:
                            found += item
                        elif item is not None:
                            found.append(item)
                    if not found:
                        return []
                    values = found
                return [e for value in values if value is not None for e in convert(code, value)]

            return chained

        def walked(resource: dict[str, Any]) -> list[IndexEntry]:
            return [
                entry
                for path in paths
                for kind, value in walk(resource, path)
                for entry in converters[kind](code, value)
            ]

        return walked

    def engine_entries(self, resource: dict[str, Any]) -> list[IndexEntry]:
        """The entries from fhirpathpy's result (also for plain paths: what they must match)."""
        found = []
        for value in self.fhirpath(resource):
            kind, data = _typed(value)
            if data is not None:
                found += self.param_type.entries(self.code, kind, data)
        return found

    def fhirpath(self, resource: dict[str, Any]) -> list[Any]:
        """The raw fhirpathpy result."""
        if self._compiled is None:
            options = _RESOLVE_OPTIONS if "resolve()" in self.expression else _OPTIONS
            self._compiled = fhirpathpy.compile(self.expression, models["r4"], options)
        return self._compiled(resource, None)  # no %context variables


def _first_keys(paths: tuple[Path, ...] | None) -> frozenset[str] | None:
    """The keys of the resource a plain path's walk starts from; None for the engine's."""
    if paths is None:
        return None
    keys: set[str] = set()
    for path in paths:
        first = path[0]
        if not isinstance(first, Member):
            return None
        keys.update(key for key, _ in first.alternatives)
    return frozenset(keys)


def _single(step: Step) -> bool:
    return isinstance(step, Member) and len(step.alternatives) == 1


def _kinds(paths: tuple[Path, ...]) -> set[str | None]:
    """The model types of the values the paths can yield (those of their last member step)."""
    kinds: set[str | None] = set()
    for path in paths:
        members = [step for step in path if isinstance(step, Member)]
        if members:
            kinds.update(kind for _, kind in members[-1].alternatives)
        else:
            kinds.add(None)
    return kinds


@cache
def _extractors(resource_type: str, with_unions: bool = False) -> tuple[_Extractor, ...]:
    """The non-composite parameters' extractors; `with_unions` also those of the union
    parameters, which the index does not hold (version 1 did: bench.throughput compares)."""
    extractors = []
    for param in d.search_params(resource_type).values():
        if param.type in (d.COMPOSITE, d.SPECIAL):
            continue
        if not with_unions and is_union(resource_type, param.code):
            continue
        expression = evaluable(param.expression, resource_type)
        plain = compile_plain(expression)
        # A plain path needs no root check: its first step is the same dictionary lookup.
        empty_safe = plain is None and not _EMPTY_PRODUCERS.search(expression)
        roots = _roots(expression, resource_type) if empty_safe else None
        param_type = PARAM_TYPES[param.type]
        extractors.append(_Extractor(param.code, expression, roots, param_type, plain))
    return tuple(extractors)


@cache
def _all_extractors(resource_type: str) -> tuple[_Extractor | Composites, ...]:
    """The parameters' extractors, then the supported composites' together (composite.py);
    none for union parameters."""
    params = d.search_params(resource_type).values()
    found = (
        composite_extractor(resource_type, p.code)
        for p in params
        if p.type == d.COMPOSITE and not is_union(resource_type, p.code)
    )
    composites = tuple(c for c in found if c is not None)
    return (*_extractors(resource_type), *([Composites(composites)] if composites else []))


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


def index_entries(resource: dict[str, Any]) -> list[IndexEntry]:
    """Every search index entry of `resource` (deduplicated, in parameter order).

    The store sets `id` and `meta.lastUpdated` first, so `_id` and `_lastUpdated` are included.
    A parameter whose expression fails on an odd resource is logged and skipped: indexing never
    fails a write.
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return []
    present = _Present(resource)
    entries: dict[IndexEntry, None] = {}
    for extractor in _all_extractors(resource_type):
        for entry in _entries_of(resource_type, extractor, resource, present):
            entries[entry] = None
    return list(entries)


def changed_entries(
    old: dict[str, Any], new: dict[str, Any]
) -> tuple[frozenset[str], list[IndexEntry]] | None:
    """What updating a resource from body `old` to body `new` changes in its index: the
    parameters (`IndexEntry.param`) whose entries differ, and `new`'s entries of those
    parameters. Rows of `index_entries(old)` with those parameters replaced by these are the
    rows of `index_entries(new)`, but for the parameters `resources` holds (`ON_RESOURCES`),
    left out here. Only the parameters whose paths read an element that differs (or whose
    paths are not known here: the engine's, composites) are extracted, from both bodies.
    None when the two are not bodies of one resource type.
    """
    resource_type = new.get("resourceType")
    if not isinstance(resource_type, str) or old.get("resourceType") != resource_type:
        return None
    differing = {
        key
        for key in old.keys() | new.keys()
        if (was := old.get(key)) is not (now := new.get(key)) and was != now
    }
    before, after = _Present(old), _Present(new)
    params: set[str] = set()
    entries: dict[IndexEntry, None] = {}
    for extractor in _all_extractors(resource_type):
        reads = extractor.reads if isinstance(extractor, _Extractor) else None
        if (reads is not None and reads.isdisjoint(differing)) or extractor.code in ON_RESOURCES:
            continue
        was = _by_param(_entries_of(resource_type, extractor, old, before))
        now = _by_param(_entries_of(resource_type, extractor, new, after))
        if was != now:
            params.update(p for p in was.keys() | now.keys() if was.get(p) != now.get(p))
            entries.update((e, None) for group in now.values() for e in group)
    return frozenset(params), [e for e in entries if e.param in params]


def _by_param(entries: list[IndexEntry]) -> dict[str, set[IndexEntry]]:
    grouped: dict[str, set[IndexEntry]] = {}
    for entry in entries:
        grouped.setdefault(entry.param, set()).add(entry)
    return grouped


class _Present:
    """The element names present in a resource (`_present`), worked out on first need."""

    __slots__ = ("_names", "_resource")

    def __init__(self, resource: dict[str, Any]) -> None:
        self._resource = resource
        self._names: set[str] | None = None

    def disjoint(self, roots: frozenset[str]) -> bool:
        if self._names is None:
            self._names = _present(self._resource)
        return roots.isdisjoint(self._names)


def _entries_of(
    resource_type: str,
    extractor: _Extractor | Composites,
    resource: dict[str, Any],
    present: _Present,
) -> list[IndexEntry]:
    """One extractor's entries of `resource`; none when its roots are absent, or when it
    fails on an odd resource (logged: indexing never fails a write)."""
    if extractor.roots is not None and present.disjoint(extractor.roots):
        return []
    try:
        return extractor.entries(resource)
    except Exception:
        log.warning(
            "search parameter %s.%s could not be evaluated",
            resource_type,
            extractor.code,
            exc_info=True,
        )
        return []
