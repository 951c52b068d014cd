"""Search semantics in one place: a criterion becomes a `Plan` over index entries.

A `Plan` says: the resource matches when some entry of one of `params` satisfies `pred` (or,
when `negate`, when none does - `:not`, `:missing=true`). `params` is the criterion's
parameter, or for a union parameter (`unions.py`: `combo-code`) the parameters it unites.
`pred` is a small tree of comparisons on entry fields. `match` evaluates it on `IndexEntry`
objects, `sql` renders it as SQL over `search_index`, so the in-memory matcher and the
database always agree.

Ranges (dates, numbers, quantities) are closed, target `[tl, th]` against search `[sl, sh]`,
following the prefix table of the FHIR search page:

    eq  sl <= tl and th <= sh        (the search range contains the target)
    ne  not eq
    gt  th > sh                      (the target reaches above the search range)
    lt  tl < sl
    ge  gt or eq                     le  lt or eq
    sa  tl > sh                      eb  th < sl
    ap  the ranges overlap (the search range is already widened by the parser)

Strings match on the folded text (lower case, no accents): a prefix by default, anywhere with
`:contains`, a word prefix with `:text` (also on tokens: display / text), the exact original
with `:exact`. Tokens, uris and references compare codes exactly (case-sensitive).

Quantities with a UCUM unit also match in base units (`gt5.4|http://unitsofmeasure.org|mg`
matches a stored `6000 ug`): each such stored quantity has a second row in base units
(`ucum.py`, text `=` + dimension), and the search value is converted the same way; either
row matching is a match. Without a unit only the rows as written are compared; with a unit
code alone (`5.4||mg`) or another system, the unit as written.

Composites (`composite.py` lays out their rows) compare the first part as a token on
system / code and the second on the row's text and range.

Numbers and quantities are indexed as points (low == high): the spec puts the implicit
precision on the search value (`100` means [99.5, 100.5)), and a stored `5.40` arrives as the
float 5.4 anyway, so a range around the stored value would make `gt100` match a stored 100.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhirstore.errors import InvalidSearch
from fhirstore.search import definitions as d
from fhirstore.search import values as v
from fhirstore.search.composite import pair_key
from fhirstore.search.datatypes import OF_TYPE
from fhirstore.search.index_entry import CANONICAL
from fhirstore.search.query import Criterion
from fhirstore.search.ucum import range_in_base_units
from fhirstore.search.unions import searched_params


@dataclass(frozen=True, slots=True)
class Cmp:
    """`entry.<field> <op> value`. A None field never satisfies a comparison except `null`.

    ops: eq, in (value is a frozenset), null, lt, le, gt, ge, prefix, contains (the field
    holds folded text), icontains (ASCII case-insensitive), starts / nstarts (case-sensitive
    prefix / not that prefix, on any field: the keys of composite rows).
    """

    field: str
    op: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class All:
    parts: tuple[Pred, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Pred, ...]


Pred = Cmp | All | AnyOf
TRUE = All(())


@dataclass(frozen=True, slots=True)
class Plan:
    params: tuple[str, ...]  # the index rows looked at: one parameter's, a union's members'
    negate: bool
    pred: Pred


def _all(*parts: Pred) -> Pred:
    kept = tuple(part for part in parts if part != TRUE)
    return kept[0] if len(kept) == 1 else All(kept)


def _any(parts: tuple[Pred, ...]) -> Pred:
    return parts[0] if len(parts) == 1 else AnyOf(parts)


def range_pred(prefix: str, low: float, high: float) -> Pred:
    contains = All((Cmp("low", "ge", low), Cmp("high", "le", high)))
    if prefix == "eq":
        return contains
    if prefix == "ne":
        return AnyOf((Cmp("low", "lt", low), Cmp("high", "gt", high)))
    if prefix == "gt":
        return Cmp("high", "gt", high)
    if prefix == "lt":
        return Cmp("low", "lt", low)
    if prefix == "ge":
        return AnyOf((Cmp("high", "gt", high), contains))
    if prefix == "le":
        return AnyOf((Cmp("low", "lt", low), contains))
    if prefix == "sa":
        return Cmp("low", "gt", high)
    if prefix == "eb":
        return Cmp("high", "lt", low)
    return All((Cmp("low", "le", high), Cmp("high", "ge", low)))  # ap


def _token(value: v.TokenValue) -> Pred:
    parts: list[Pred] = []
    if value.code is not None:
        parts.append(Cmp("code", "eq", value.code))
    if value.no_system:
        parts.append(Cmp("system", "null"))
    elif value.system is not None:
        parts.append(Cmp("system", "eq", value.system))
    return _all(*parts)


def _words(value: v.StringValue) -> Pred:
    """`:text`: some word of the (folded) text starts with the value."""
    return AnyOf(
        (Cmp("text", "prefix", value.normalized), Cmp("text", "contains", " " + value.normalized))
    )


def _string(value: v.StringValue, modifier: str | None) -> Pred:
    if modifier == "text":
        return _words(value)
    if modifier == "exact":
        return Cmp("code", "eq", value.value)
    if modifier == "contains":
        return Cmp("text", "contains", value.normalized)
    return Cmp("text", "prefix", value.normalized)


def _uri(value: v.UriValue, modifier: str | None) -> Pred:
    if modifier == "above":
        return Cmp("code", "in", frozenset(v.uri_ancestors(value.value)))
    if modifier == "below":
        parent = value.value.rstrip("/")
        return AnyOf((Cmp("code", "eq", value.value), Cmp("code", "prefix", parent + "/")))
    if modifier == "contains":
        return Cmp("code", "icontains", value.value)
    return Cmp("code", "eq", value.value)


def _reference(value: v.ReferenceValue) -> Pred:
    if len(value.codes) == 1:
        return Cmp("code", "eq", value.codes[0])
    return Cmp("code", "in", frozenset(value.codes))


def _in_base_units(value: v.RangeValue) -> Pred | None:
    """The range in base units, on the rows in base units of the same dimension (ucum.py);
    None when the unit is not a UCUM unit that converts."""
    exact = value.prefix in v.EXACT_BOUND_PREFIXES
    found = range_in_base_units(value.system, value.code, value.low, value.high, exact=exact)
    if found is None:
        return None
    key, low, high = found
    return All((range_pred(value.prefix, low, high), Cmp("text", "eq", CANONICAL + key)))


def _range(value: v.RangeValue) -> Pred:
    """Dates and numbers; quantities: as written (a UCUM unit also in base units, either
    matching), without a unit on the rows as written only."""
    written = range_pred(value.prefix, value.low, value.high)
    if not value.quantity:
        return written
    if value.system is None and value.code is None:
        return _all(written, Cmp("text", "null"))
    unit: list[Pred] = []
    if value.system is not None:
        unit.append(Cmp("system", "eq", value.system))
    if value.code is not None:
        unit.append(Cmp("code", "eq", value.code))
    as_written = _all(written, *unit)
    in_base = _in_base_units(value)
    return as_written if in_base is None else AnyOf((as_written, in_base))


def _composite_quantity(value: v.RangeValue) -> Pred:
    """The second part of a composite, a quantity: its unit is in the row's text."""
    written = range_pred(value.prefix, value.low, value.high)
    if value.code is None:
        return _all(written, Cmp("text", "nstarts", CANONICAL))
    if value.system is None:
        return _all(written, Cmp("text", "starts", pair_key(None, value.code)))
    as_written = _all(written, Cmp("text", "eq", pair_key(value.system, value.code)))
    in_base = _in_base_units(value)
    return as_written if in_base is None else AnyOf((as_written, in_base))


def _composite_part(value: v.SearchValue) -> Pred:
    """What the second part of a composite requires of the row (composite.py's layout)."""
    if isinstance(value, v.TokenValue):
        if value.no_system or value.system is not None:
            return Cmp("text", "eq", pair_key(value.system, value.code))
        return Cmp("text", "starts", pair_key(None, value.code))
    if isinstance(value, v.RangeValue):
        if value.quantity:
            return _composite_quantity(value)
        return range_pred(value.prefix, value.low, value.high)
    if isinstance(value, v.StringValue):
        return Cmp("text", "prefix", value.normalized)
    if isinstance(value, v.ReferenceValue):
        return Cmp("text", "in", frozenset(value.codes))
    if isinstance(value, v.UriValue):
        return Cmp("text", "eq", value.value)
    raise TypeError(f"no comparison for {value!r} in a composite")


def _composite(value: v.CompositeValue) -> Pred:
    first, second = value.parts
    assert isinstance(first, v.TokenValue)
    return _all(_token(first), _composite_part(second))


def _code_set(value: v.CodeSetValue) -> Pred:
    """Some coding of the token is in the expanded ValueSet."""
    if not value.codes:
        return Cmp("code", "in", frozenset())
    systems: dict[str, set[str]] = {}
    for system, code in value.codes:
        systems.setdefault(system, set()).add(code)
    return _any(
        tuple(
            All((Cmp("system", "eq", system), Cmp("code", "in", frozenset(codes))))
            for system, codes in sorted(systems.items())
        )
    )


def _of_type(value: v.OfTypeValue) -> Pred:
    """On the `<param>:of-type` rows: the Identifier's type coding and its value."""
    parts: list[Pred] = [Cmp("code", "eq", value.code), Cmp("text", "eq", value.value)]
    if value.system is not None:
        parts.append(Cmp("system", "eq", value.system))
    return All(tuple(parts))


def value_pred(value: v.SearchValue, modifier: str | None) -> Pred:
    """What one (OR-ed) search value requires of one index entry."""
    if isinstance(value, v.TokenValue):
        return _token(value)
    if isinstance(value, v.StringValue):
        return _string(value, modifier)
    if isinstance(value, v.UriValue):
        return _uri(value, modifier)
    if isinstance(value, v.ReferenceValue):
        return _reference(value)
    if isinstance(value, v.RangeValue):
        return _range(value)
    if isinstance(value, v.CompositeValue):
        return _composite(value)
    if isinstance(value, v.CodeSetValue):
        return _code_set(value)
    if isinstance(value, v.OfTypeValue):
        return _of_type(value)
    if isinstance(value, v.ValueSetRef):
        raise InvalidSearch(
            f"the ValueSet {value.reference} of :in / :not-in was not expanded before matching"
        )
    raise TypeError(f"no comparison for {value!r}")


@lru_cache(maxsize=16384)
def plan(criterion: Criterion) -> Plan:
    """The comparison plan of a criterion (cached: criteria are immutable)."""
    params = searched_params(criterion.param)  # a union parameter: its members' rows
    if criterion.modifier == "missing":
        missing = all(isinstance(x, v.MissingValue) and x.missing for x in criterion.values)
        return Plan(params, negate=missing, pred=TRUE)
    pred = _any(tuple(value_pred(value, criterion.modifier) for value in criterion.values))
    if criterion.modifier == "of-type":
        params = tuple(code + OF_TYPE for code in params)
    return Plan(params, negate=criterion.modifier in ("not", "not-in"), pred=pred)


def sort_field(param: d.SearchParam, descending: bool) -> str:
    """The entry field a `_sort` on `param` orders by (min ascending, max descending)."""
    if param.type in (d.DATE, d.NUMBER, d.QUANTITY):
        return "high" if descending else "low"
    return "text" if param.type == d.STRING else "code"
