"""Index keys: what lets the matcher skip subscriptions that cannot match a change.

A key is (resource type, parameter, code). A subscription is filed under the keys of one of its
equality filters on a token or reference parameter (`patient=Patient/123` ->
`("Encounter", "patient", "Patient/123")`), or under its focus types (`_type` keys) when it has
no such filter. A change offers the keys of its focus resource's index entries; only
subscriptions filed under one of those keys (plus those with no key at all) are evaluated.

A chained equality filter (`patient.identifier=http://example.org/mrn|42`) may file a
subscription under a chained key: `("Observation", "patient:Patient.identifier", "42")`, the
parameter being the chain's name (`chains.chain_name`). A change offers those keys once the
resources the chain reaches from its focus are read (`chained_event_keys`): the read is one per
change and chain, whatever the number of subscriptions. A plain key is preferred when a
subscription has one (it needs no read).

An `:in` filter, its ValueSets expanded, files a subscription under every code of the expansion
(the key has no system; the filter compares it). An empty expansion gives no keys: the filter
is then evaluated on every change, and holds for none, which is what `:in` of an empty set means.

A union parameter (`combo-code`, see `fhirstore.search.unions`) has no entries of its own: a
change offers its keys from its members' entries (`code`, `component-code`).

A key is a necessary condition, never a sufficient one: the filters are still evaluated in
full. Codes are compared exactly as `fhirstore.search.compare` does (`code == value`), so a key
never hides a subscription the search semantics would match.
"""

from __future__ import annotations

from collections.abc import Sequence

from fhirstore.search import Criterion, EntryGroups, SearchParam, searched_params, union_params
from fhirstore.search import definitions as d
from fhirstore.search import values as v
from subscriptions.chains import chain_name
from subscriptions.model import ANY_RESOURCE, Filter

# Every set of focus types filed so far, shared by the subscriptions that name it: a set per
# combination of resource types a subscription names (bounded by them, never by subscriptions).
_TYPE_SETS: dict[frozenset[str], frozenset[str]] = {}

IndexKey = tuple[str, str, str]
TYPE_CODE = "_type"
_KEYED_TYPES = frozenset({d.TOKEN, d.REFERENCE})


def is_type_filter(item: Filter) -> bool:
    """`_type=Observation,Patient`: restricts the focus types (see `subscription.TYPE_PARAM`)."""
    return item.criterion.param.code == TYPE_CODE and item.resource_type == ANY_RESOURCE


def focus_types(filters: Sequence[Filter]) -> frozenset[str] | None:
    """The focus types a subscription hears about: those named by `_type` if it has one, else
    those its typed filters name; None means every type of its topic. Equal sets are one
    object (most subscriptions are about one of a few types)."""
    named = [frozenset(_codes(f.criterion) or ()) for f in filters if is_type_filter(f)]
    if named:
        types = frozenset.intersection(*named)
    else:
        types = frozenset(f.resource_type for f in filters if f.resource_type != ANY_RESOURCE)
        if not types:
            return None
    return _TYPE_SETS.setdefault(types, types)


def subscription_keys(
    filters: Sequence[Filter], types: frozenset[str] | None
) -> tuple[IndexKey, ...]:
    """The keys to file a subscription under; empty means "evaluate it on every change"."""
    if types is not None and len(types) == 1:
        (focus,) = types
        # Plain before chained, the fewest keys, references before tokens (`patient=` is
        # rarer than `status=`).
        options = [
            (bool(f.criterion.chain), len(keys), f.criterion.param.type != d.REFERENCE, keys)
            for f in filters
            if f.resource_type == focus
            for keys in [_filter_keys(f)]
            if keys
        ]
        if options:
            return min(options)[3]
    if types is not None:
        return tuple((ANY_RESOURCE, TYPE_CODE, name) for name in sorted(types))
    return ()


def event_keys(resource_type: str, groups: EntryGroups | None) -> frozenset[IndexKey]:
    """The keys a change offers: its focus type and its token / reference codes."""
    keys = {(ANY_RESOURCE, TYPE_CODE, resource_type)}
    if groups is not None:
        params = d.search_params(resource_type)
        for code, entries in groups.items():
            param = params.get(code)
            if param is not None and param.type in _KEYED_TYPES:
                keys.update((resource_type, code, e.code) for e in entries if e.code is not None)
        # A union parameter (`combo-code`) has no entries: it offers its members' codes.
        for union, members in union_params(resource_type).items():
            if params[union].type in _KEYED_TYPES:
                keys.update(
                    (resource_type, union, e.code)
                    for member in members
                    for e in groups.get(member, ())
                    if e.code is not None
                )
    return frozenset(keys)


def chained_event_keys(
    resource_type: str, name: str, param: SearchParam, reached: Sequence[EntryGroups]
) -> set[IndexKey]:
    """The chained keys a change offers for the chain `name`: the codes of `param` (its
    members' for a union parameter) on the resources the chain `reached` from its focus."""
    codes = searched_params(param)
    return {
        (resource_type, name, e.code)
        for groups in reached
        for code in codes
        for e in groups.get(code, ())
        if e.code is not None
    }


def keyed_chain(keys: Sequence[IndexKey], filters: Sequence[Filter]) -> Criterion | None:
    """The chained criterion whose keys `keys` are (None when they are plain keys)."""
    if not keys:
        return None
    for item in filters:
        criterion = item.criterion
        if criterion.chain and _filter_keys(item) == tuple(keys):
            return criterion
    return None


def _filter_keys(item: Filter) -> tuple[IndexKey, ...]:
    """Keys of an equality filter (every value exact); () when the filter is not one."""
    criterion = item.criterion
    if criterion.param.type not in _KEYED_TYPES or not _plain_equality(criterion):
        return ()
    if any(link.reverse for link in criterion.chain):
        return ()
    codes = _codes(criterion)
    if codes is None:
        return ()
    name = chain_name(criterion) if criterion.chain else criterion.param.code
    return tuple((item.resource_type, name, code) for code in sorted(codes))


def _plain_equality(criterion: Criterion) -> bool:
    modifier = criterion.modifier
    if modifier is None or modifier == "in":  # `:in`: any code of its expanded ValueSets
        return True
    # `subject:Patient=123` compares codes like `subject=Patient/123`.
    return criterion.param.type == d.REFERENCE and modifier in d.resource_types()


def _codes(criterion: Criterion) -> set[str] | None:
    """Every code one of the criterion's (OR-ed) values requires, or None if some value
    does not require a single exact code."""
    codes: set[str] = set()
    for value in criterion.values:
        if isinstance(value, v.TokenValue) and value.code is not None:
            codes.add(value.code)
        elif isinstance(value, v.ReferenceValue):
            codes.update(value.codes)
        elif isinstance(value, v.CodeSetValue):
            codes.update(code for _, code in value.codes)
        else:
            return None
    return codes
