"""`canFilterBy.modifier`: the R4B operator codes a topic allows, and the ones a filter uses.

R4B has one fixed set of codes for `SubscriptionTopic.canFilterBy.modifier` (value set
`subscription-search-modifier`): `=`, the search prefixes `eq ne gt lt ge le sa eb ap`, and the
modifiers `above below in not-in of-type`. Herald reads a filter as the codes it uses:

- `param=value` on a token, string, uri, reference or composite parameter: `=`;
- on a number, date or quantity the prefix is the code (`gt2020` uses `gt`); no prefix means
  `eq`, and `=` and `eq` allow each other there (both are the plain comparison);
- `:not` (token) is `ne`; `:above`, `:below`, `:in`, `:not-in`, `:of-type` are themselves;
- `:Patient` on a reference (`subject:Patient=1`) is `=`: it only names the target type;
- a chain (`patient.identifier=x`) is `=` on the first parameter (it follows the reference),
  plus the codes of the chained parameter's own modifier or prefix (`patient.birthdate=gt2000`
  uses `=` and `gt`): the list bounds everything a filter on that parameter does;
- `:missing`, `:exact`, `:contains`, `:text` and Herald's other modifiers have no R4B code:
  they are allowed only where the topic lists no modifier for the parameter.

A canFilterBy entry without `modifier` allows every modifier and prefix Herald supports.
"""

from __future__ import annotations

from collections.abc import Mapping

from fhirstore.search import Criterion
from fhirstore.search import definitions as d
from fhirstore.search import values as v
from subscriptions.elements import invalid
from subscriptions.model import ANY_RESOURCE, Topic

ANY_PARAMETER = "*"  # canFilterBy.filterParameter allowing every parameter (topics.py)

# http://hl7.org/fhir/ValueSet/subscription-search-modifier (R4B), in its order.
R4B_CODES: tuple[str, ...] = ("=", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
R4B_CODES += ("above", "below", "in", "not-in", "of-type")
PLAIN = "="
EQ = "eq"
_ORDERED = frozenset({d.NUMBER, d.DATE, d.QUANTITY})
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_TOKEN_MODIFIERS = {"not": "ne", "above": "above", "below": "below", "in": "in"}
_TOKEN_MODIFIERS |= {"not-in": "not-in", "of-type": "of-type"}
_URI_MODIFIERS = {"above": "above", "below": "below"}

# The codes that can mean something on a parameter of each type (R4B says a topic's list
# "SHALL be a strict subset of the modifiers defined on that SearchParameter").
CODES_BY_TYPE: Mapping[str, tuple[str, ...]] = {
    d.NUMBER: (PLAIN, *_PREFIXES),
    d.DATE: (PLAIN, *_PREFIXES),
    d.QUANTITY: (PLAIN, *_PREFIXES),
    d.TOKEN: (PLAIN, "ne", "above", "below", "in", "not-in", "of-type"),
    d.URI: (PLAIN, "above", "below"),
    d.REFERENCE: (PLAIN,),
    d.STRING: (PLAIN,),
    d.COMPOSITE: (PLAIN, *_PREFIXES),
}


class NoCode(Exception):
    """The filter uses a modifier that has no R4B code (`:missing`, `:text`, ...)."""

    def __init__(self, modifier: str) -> None:
        super().__init__(modifier)
        self.modifier = modifier


def codes_used(criterion: Criterion) -> frozenset[str]:
    """The R4B codes `criterion` uses; raises NoCode for a modifier R4B has no code for."""
    used = {PLAIN} if criterion.chain else set()
    modifier = criterion.modifier
    param_type = criterion.param.type
    if modifier is None or (param_type == d.REFERENCE and modifier in d.resource_types()):
        if param_type in _ORDERED:
            used.update(_prefix(value) for value in criterion.values)
        else:
            used.add(PLAIN)
        return frozenset(used)
    named = (_TOKEN_MODIFIERS if param_type == d.TOKEN else _URI_MODIFIERS).get(modifier)
    if param_type not in (d.TOKEN, d.URI) or named is None:
        raise NoCode(modifier)
    used.add(named)
    return frozenset(used)


def _prefix(value: v.SearchValue) -> str:
    return value.prefix if isinstance(value, v.RangeValue) else EQ


def refused_codes(used: frozenset[str], allowed: frozenset[str]) -> list[str]:
    """The codes of `used` that `allowed` does not allow (`=` and `eq` allow each other)."""
    widened = set(allowed)
    if widened & {PLAIN, EQ}:
        widened |= {PLAIN, EQ}
    return [code for code in R4B_CODES if code in used and code not in widened]


def written(criterion: Criterion, code: str) -> str:
    """How a filter writes `code`, for a message: `:in`, `:not`, the prefix `gt`, plain `=`."""
    if code == PLAIN:
        return "plain `=`"
    if code == "ne" and criterion.param.type == d.TOKEN:
        return "`:not` (ne)"
    if code == EQ:
        return "the prefix `eq` (or none)"
    if code in _PREFIXES:
        return f"the prefix `{code}`"
    return f"`:{code}`"


def allowed_codes(topic: Topic, resource_type: str, code: str) -> frozenset[str] | None:
    """The codes `topic` allows on parameter `code` of `resource_type`; None: any. The entry
    naming the parameter wins over a `*` entry, one on the type over one on every type."""
    for focus, name in (
        (resource_type, code),
        (ANY_RESOURCE, code),
        (resource_type, ANY_PARAMETER),
        (ANY_RESOURCE, ANY_PARAMETER),
    ):
        entries = topic.filter_modifiers.get(focus, {})
        if name in entries:
            return entries[name]
    return None


def check_modifiers(
    topic: Topic, resource_type: str, code: str, criterion: Criterion, path: str
) -> None:
    """Refuse (422) a filter using a modifier or prefix the topic does not list for `code`,
    naming the ones it lists."""
    allowed = allowed_codes(topic, resource_type, code)
    if allowed is None:
        return
    try:
        refused = [written(criterion, c) for c in refused_codes(codes_used(criterion), allowed)]
    except NoCode as no_code:
        refused = [f"`:{no_code.modifier}` (no R4B code; allowed only where none is listed)"]
    if refused:
        listed = ", ".join(c for c in R4B_CODES if c in allowed)
        raise invalid(
            path,
            f"topic {topic.url} allows filtering {resource_type} by {code!r} only with the"
            f" modifiers {listed} (canFilterBy.modifier); this filter uses {', '.join(refused)}",
        )
