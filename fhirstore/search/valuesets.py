"""ValueSets for the token modifiers `:in` and `:not-in`: read from the store, expanded here.

`code:in=http://example.org/ValueSet/x` (or `code:in=ValueSet/x`) is parsed into a
`ValueSetRef`; before the search runs, `expand_criteria` reads the ValueSet through the
search's `Narrowing` (a ValueSet the reader may not read is as unknown: 400 "not found") and
replaces the reference with a `CodeSetValue`, the (system, code) pairs it contains, which
both the SQL search and the in-memory matcher compare (`compare._code_set`).

Herald has no terminology server, so only what a ValueSet states itself is expanded:
- `compose.include` / `compose.exclude` with a `system` and explicit `concept` codes;
- filters whose property is `concept` or `code` with the operator `=` (one code) or `in`
  (comma-separated codes): they name codes, whatever the code system says about them;
- `valueSet` entries of an include, when those ValueSets are stored in Herald too (the
  include is the intersection of them and its own codes, as the spec says);
- a stored `expansion.contains` (used when there is no `compose`).
Everything else (a whole code system, `is-a`, `descendent-of`, `regex`, `=` on other
properties, ...) needs the code system's content: a 400 naming the ValueSet and the part.
Codes are compared without the code system's version.

The expansion notes which ValueSets it named and read (`sources`), so that whoever keeps an
expansion (a Subscription filter) knows which ValueSet changes concern it.

An expansion is bounded: all the codes of one search's ValueSets together at most
`SearchLimits.max_valueset_codes` (each one is a bound parameter of the query), else 400
too-costly naming the setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import false, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore.access.boundary import Reach
from fhirstore.access.narrowing import Narrowing
from fhirstore.db.schema import resources, search_index
from fhirstore.errors import InvalidSearch
from fhirstore.search import values as v
from fhirstore.search.limits import DEFAULT_LIMITS, SearchLimits, over_limit
from fhirstore.search.query import Criterion

if TYPE_CHECKING:
    from fhirstore.access.boundary import Access

Codes = set[tuple[str, str]]
_CODE_PROPERTIES = frozenset({"concept", "code"})
MAX_DEPTH = 8  # ValueSets including ValueSets


class _Expansion:
    """One search's expansions: the connection, the reach, and the codes counted so far."""

    def __init__(
        self,
        conn: AsyncConnection,
        narrowing: Narrowing | None,
        limits: SearchLimits,
        name: str,
    ) -> None:
        self.conn, self.narrowing, self.limits, self.name = conn, narrowing, limits, name
        self.counted = 0
        # Every ValueSet named (`ValueSet/id`, or a canonical url without its version) and
        # every one read (both ways): what the expansion depends on.
        self.sources: set[str] = set()

    def _fail(self, message: str) -> InvalidSearch:
        return InvalidSearch(f"Search parameter '{self.name}': {message}", expression=[self.name])

    async def load(self, reference: str) -> dict[str, Any]:
        """The ValueSet named by canonical url (`url[|version]`) or `ValueSet/id`."""
        rows = resources
        where = [rows.c.res_type == "ValueSet", rows.c.deleted == false()]
        kind, _, ident = reference.partition("/")
        if kind == "ValueSet" and "://" not in reference:
            self.sources.add(reference)
            where.append(rows.c.res_id == ident)
        else:
            url, _, version = reference.partition("|")
            self.sources.add(url)
            where.append(_indexed("url", url))
            if version:
                where.append(_indexed("version", version))
        reach = self.narrowing.other("ValueSet", rows) if self.narrowing is not None else None
        if reach is not None:
            where.append(reach)
        query = select(rows.c.body).where(*where).limit(2)
        found = (await self.conn.execute(query)).scalars().all()
        if not found:
            raise self._fail(f"ValueSet {reference!r} is not known to this server")
        if len(found) > 1:
            raise self._fail(
                f"several ValueSets have the url {reference!r}; add |version or use ValueSet/id"
            )
        value_set = dict(orjson.loads(found[0]))
        self.sources.update(value_set_sources(value_set))
        return value_set

    async def expand(self, reference: str, seen: tuple[str, ...] = ()) -> Codes:
        if reference in seen or len(seen) >= MAX_DEPTH:
            raise self._fail(f"ValueSet {reference!r} includes itself, or nests too deep")
        value_set = await self.load(reference)
        seen = (*seen, reference)
        compose = value_set.get("compose")
        if isinstance(compose, dict):
            codes: Codes = set()
            for index, part in enumerate(compose.get("include") or ()):
                where = f"compose.include[{index}]"
                codes |= await self._part(reference, where, part, seen)
                self._count(len(codes))
            for index, part in enumerate(compose.get("exclude") or ()):
                codes -= await self._part(reference, f"compose.exclude[{index}]", part, seen)
            return codes
        contains = (value_set.get("expansion") or {}).get("contains")
        if isinstance(contains, list):
            codes = set(_contained(contains))
            self._count(len(codes))
            return codes
        raise self._fail(f"ValueSet {reference!r} has neither compose nor expansion")

    def _count(self, codes: int) -> None:
        if self.counted + codes > self.limits.max_valueset_codes:
            raise over_limit(
                self.name,
                self.counted + codes,
                self.limits.max_valueset_codes,
                "HERALD_SEARCH_MAX_VALUESET_CODES",
                "codes of the ValueSets of one search are limited; use a smaller ValueSet",
            )

    async def _part(
        self, reference: str, where: str, part: dict[str, Any], seen: tuple[str, ...]
    ) -> Codes:
        """The codes of one include / exclude: its own codes, intersected with its ValueSets."""
        sets: list[Codes] = []
        system = part.get("system")
        if system is not None or part.get("concept") or part.get("filter"):
            sets.append(self._system_codes(reference, where, part))
        for url in part.get("valueSet") or ():
            sets.append(await self.expand(str(url), seen))
        if not sets:
            raise self._fail(f"ValueSet {reference!r} {where} names no codes")
        return set.intersection(*sets)

    def _system_codes(self, reference: str, where: str, part: dict[str, Any]) -> Codes:
        system = part.get("system")
        if not isinstance(system, str):
            raise self._fail(f"ValueSet {reference!r} {where} has codes without a system")
        concepts = part.get("concept")
        filters = part.get("filter")
        if concepts:
            return {(system, str(c.get("code"))) for c in concepts if c.get("code")}
        if not filters:
            raise self._fail(
                f"ValueSet {reference!r} {where} includes the whole code system {system}, "
                f"which needs a terminology server (supported: {_SUPPORTED})"
            )
        sets = [self._filter(reference, f"{where}.filter[{i}]", f) for i, f in enumerate(filters)]
        return {(system, code) for code in set.intersection(*sets)}

    def _filter(self, reference: str, where: str, item: dict[str, Any]) -> set[str]:
        prop, op, value = item.get("property"), item.get("op"), item.get("value")
        if prop in _CODE_PROPERTIES and isinstance(value, str):
            if op == "=":
                return {value}
            if op == "in":
                return {code.strip() for code in value.split(",") if code.strip()}
        raise self._fail(
            f"ValueSet {reference!r} {where} (property {prop!r}, op {op!r}) needs a terminology "
            f"server, which Herald does not have (supported: {_SUPPORTED})"
        )


_SUPPORTED = (
    "explicit concept codes, filters on concept or code with = or in, valueSet includes of "
    "stored ValueSets, a stored expansion"
)


def _indexed(param: str, code: str) -> Any:
    entry = search_index.alias()
    return (
        select(literal(1))
        .where(
            entry.c.res_type == "ValueSet",
            entry.c.res_id == resources.c.res_id,
            entry.c.param == param,
            entry.c.code == code,
        )
        .exists()
    )


def _contained(contains: list[Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for item in contains:
        if not isinstance(item, dict):
            continue
        system, code = item.get("system"), item.get("code")
        if isinstance(system, str) and isinstance(code, str) and not item.get("abstract"):
            found.append((system, code))
        found += _contained(item.get("contains") or [])
    return found


def value_set_sources(value_set: dict[str, Any]) -> set[str]:
    """How a ValueSet can be named: `ValueSet/id` and its canonical url (without version)."""
    names = {f"ValueSet/{value_set.get('id')}"}
    url = value_set.get("url")
    if isinstance(url, str):
        names.add(url)
    return names


def reading(access: Access) -> Narrowing:
    """A narrowing that reads ValueSets as `access` may (none at all when it may read no
    ValueSet), for expansions outside a search (a Subscription filter, read by its owner).
    Its own reach is for no resource type: only `Narrowing.other` is ever asked."""
    return Narrowing(Reach("", "expansion"), access)


def has_value_sets(criteria: Sequence[Criterion]) -> bool:
    return any(isinstance(value, v.ValueSetRef) for c in criteria for value in c.values)


async def expand_criteria(
    conn: AsyncConnection,
    criteria: Sequence[Criterion],
    narrowing: Narrowing | None,
    limits: SearchLimits = DEFAULT_LIMITS,
    sources: set[str] | None = None,
) -> list[Criterion]:
    """`criteria` with every `ValueSetRef` replaced by its expansion, read inside
    `narrowing` (None: every stored ValueSet). Raises InvalidSearch (400). `sources` (if
    given) gains how every ValueSet named or read is named (`value_set_sources`), even when
    the expansion fails: what a change would make the expansion differ."""
    if not has_value_sets(criteria):
        return list(criteria)
    expansion = _Expansion(conn, narrowing, limits, "")
    if sources is not None:
        expansion.sources = sources
    expanded = []
    for criterion in criteria:
        expansion.name = f"{criterion.param.code}:{criterion.modifier}"
        values: list[v.SearchValue] = []
        for value in criterion.values:
            if isinstance(value, v.ValueSetRef):
                codes = await expansion.expand(value.reference)
                expansion.counted += len(codes)
                values.append(v.CodeSetValue(value.reference, frozenset(codes)))
            else:
                values.append(value)
        expanded.append(dataclasses.replace(criterion, values=tuple(values)))
    return expanded
