"""Parse an R4B Subscription into a `SubscriptionSpec`: Backport IG topic-based or classic R4.

- Topic-based: `criteria` is a SubscriptionTopic canonical; filters come from
  `backport-filter-criteria` extensions on `_criteria`, each `Type?a=1&b=2`, `Type.a=1` or
  `a[:modifier]=1` (every parameter is one Filter; all are ANDed). A filter without a type
  applies to the topic's only resource type, or to the single type named by `_type`.
- `_type=Observation,Patient` (topics on every resource type) restricts the focus types. It is
  a Filter on ANY_RESOURCE whose criterion uses `TYPE_PARAM` (a token parameter that is not in
  the search table); the matcher handles it itself, it never reaches `matches_entries`.
  Typed filters also restrict the focus types (see `keys.focus_types`).
- Classic: `criteria` is `Type` or `Type?params`; the topic is `classic_topic(Type)`.

Every error is an `Unprocessable` naming the element. Nothing here touches a database: the
ValueSets of `:in` / `:not-in` filters stay `ValueSetRef`s, which `value_sets.py` expands.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from fhirstore.access import owner_of
from fhirstore.search import Criterion, SearchParam, TokenValue
from fhirstore.search import definitions as d
from fhirstore.wire import FILTER_CRITERIA, SIGNING_SECRET
from subscriptions.channel import REST_HOOK_ONLY, ChannelSupport, parse_channel
from subscriptions.criteria import criterion, split_query
from subscriptions.elements import (
    child,
    extension_value,
    extensions,
    invalid,
    single_extension,
    string,
)
from subscriptions.keys import TYPE_CODE
from subscriptions.model import (
    ANY_RESOURCE,
    Filter,
    ResourceTrigger,
    SubscriptionSpec,
    SubscriptionState,
    Topic,
    classic_topic_url,
)
from subscriptions.operators import ANY_PARAMETER, check_modifiers

TYPE_PARAM = SearchParam(TYPE_CODE, d.TOKEN, "Resource.resourceType")
HAS = "_has"
_NO_REVERSE_CHAINS = (
    "reverse chains (_has) are not supported in subscription filters: whether one holds"
    " changes when the other resources change, and those changes notify nobody about this"
    " resource; write a filter on the focus or a forward chain (patient.identifier=...)"
)
STATUSES = frozenset({"requested", "active", "error", "off"})
PATH = "Subscription"
CRITERIA = "Subscription.criteria"
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]+")

FindTopic = Callable[[str], Topic | None]
# (where, explicit type or None, name with modifier, value, text as written)
_RawFilter = tuple[str, str | None, str, str, str]


def parse_subscription(
    resource: dict[str, Any],
    find_topic: FindTopic,
    *,
    channels: ChannelSupport = REST_HOOK_ONLY,
    now: datetime | None = None,
) -> SubscriptionSpec:
    """The SubscriptionSpec of a Subscription; raises Unprocessable naming the element."""
    if resource.get("resourceType") != PATH:
        raise invalid(PATH, f"expected a Subscription (got {resource.get('resourceType')!r})")
    criteria = cast(str, string(resource, "criteria", PATH, required=True)).strip()
    classic_type = _classic_type(criteria)
    if classic_type is not None:
        topic_url = classic_topic_url(classic_type)
        filters = _classic_filters(classic_type, criteria, now)
    else:
        topic = _topic(criteria, find_topic)
        topic_url, filters = topic.url, _topic_filters(resource, topic, now)
    return SubscriptionSpec(
        id=string(resource, "id", PATH) or "",
        topic_url=topic_url,
        filters=filters,
        channel=parse_channel(resource, classic=classic_type is not None, support=channels),
        status=_status(resource),
        end=_end(resource),
        classic=classic_type is not None,
        secret=_secret(resource),
        owner=owner_of(resource),
    )


@cache
def classic_topic(resource_type: str) -> Topic:
    """The implicit topic of classic `Type?...` criteria: creates and updates of the type,
    filtered by any of its search parameters."""
    return Topic(
        url=classic_topic_url(resource_type),
        triggers=(ResourceTrigger(resource_type, frozenset({"create", "update"})),),
        can_filter_by={resource_type: frozenset({ANY_PARAMETER})},
        title=f"{resource_type} created or updated (classic criteria)",
    )


# -- criteria -------------------------------------------------------------------------------------


def _classic_type(criteria: str) -> str | None:
    """The type of classic criteria; None for a topic canonical."""
    head = criteria.partition("?")[0]
    if _TYPE_NAME.fullmatch(head):
        if head not in d.resource_types():
            raise invalid(CRITERIA, f"unknown resource type {head!r}")
        return head
    if "://" in head or head.startswith("urn:"):
        return None
    raise invalid(
        CRITERIA,
        "expects a SubscriptionTopic canonical URL (topic-based) or Type?parameters"
        f" (classic R4), e.g. Observation?code=8867-4 (got {criteria!r})",
    )


def _topic(criteria: str, find_topic: FindTopic) -> Topic:
    url = criteria.partition("|")[0]  # a canonical may carry |version
    topic = find_topic(url)
    if topic is None:
        raise invalid(CRITERIA, f"{url!r} is not a SubscriptionTopic this server knows")
    return topic


def _classic_filters(resource_type: str, criteria: str, now: datetime | None) -> tuple[Filter, ...]:
    query = criteria.partition("?")[2]
    if not query:
        return ()
    return tuple(
        Filter(
            resource_type,
            _forward_criterion(resource_type, name, value, CRITERIA, now),
            f"{name}={value}",
            CRITERIA,
        )
        for name, value in split_query(query, CRITERIA)
    )


# -- backport filters -----------------------------------------------------------------------------


def _topic_filters(
    resource: dict[str, Any], topic: Topic, now: datetime | None
) -> tuple[Filter, ...]:
    holder = child(resource, "_criteria", PATH)
    raw: list[_RawFilter] = []
    for path, extension in extensions(holder, FILTER_CRITERIA, CRITERIA):
        text = extension_value(extension, "valueString", path)
        if not isinstance(text, str) or not text.strip():
            raise invalid(f"{path}.valueString", "must be a filter such as Type?param=value")
        raw.extend(_split_filter(text.strip(), path))
    type_filters = {i: _type_filter(topic, item) for i, item in enumerate(raw) if _is_type(item)}
    types = _focus_types(raw, type_filters)
    return tuple(
        type_filters[i] if i in type_filters else _param_filter(topic, item, types, now)
        for i, item in enumerate(raw)
    )


def _focus_types(raw: list[_RawFilter], type_filters: dict[int, Filter]) -> frozenset[str] | None:
    """The types all `_type` filters allow (None without one)."""
    if not type_filters:
        return None
    common = frozenset.intersection(*map(_type_names, type_filters.values()))
    if not common:
        raise invalid(
            raw[max(type_filters)][0], "the _type filters have no resource type in common"
        )
    return common


def _is_type(item: _RawFilter) -> bool:
    return item[2].partition(":")[0] == TYPE_CODE


def _split_filter(text: str, path: str) -> list[_RawFilter]:
    """`Type?a=1&b=2`, `Type.a=1` or `a=1&b=2` as one raw filter per parameter."""
    head = text.partition("=")[0]
    explicit, query, prefix = None, text, ""
    if "?" in head:
        explicit, _, query = text.partition("?")
        prefix = explicit + "?"
    elif "." in head and _TYPE_NAME.fullmatch(head.partition(".")[0]):
        explicit, _, query = text.partition(".")
        prefix = explicit + "."
    if explicit is not None and explicit not in d.resource_types():
        raise invalid(path, f"unknown resource type {explicit!r} in filter {text!r}")
    return [
        (path, explicit, name, value, f"{prefix}{name}={value}")
        for name, value in split_query(query, path)
    ]


def _type_filter(topic: Topic, item: _RawFilter) -> Filter:
    path, explicit, name, value, text = item
    if explicit is not None or name != TYPE_CODE:
        raise invalid(path, f"write _type=Type1,Type2 without a type or modifier (got {text!r})")
    if not _allows_type_filter(topic):
        raise invalid(path, f"topic {topic.url} does not allow filtering by _type")
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise invalid(path, "_type needs at least one resource type")
    for resource_type in names:
        _check_focus(topic, resource_type, path)
    values = tuple(TokenValue(code=resource_type) for resource_type in names)
    return Filter(ANY_RESOURCE, Criterion(TYPE_PARAM, None, values), text)


def _type_names(item: Filter) -> frozenset[str]:
    return frozenset(v.code for v in item.criterion.values if isinstance(v, TokenValue) and v.code)


def _param_filter(
    topic: Topic, item: _RawFilter, types: frozenset[str] | None, now: datetime | None
) -> Filter:
    path, explicit, name, value, text = item
    resource_type = explicit or _default_type(topic, types, path, text)
    _check_focus(topic, resource_type, path)
    if types is not None and resource_type not in types:
        raise invalid(path, f"{resource_type} is not among the types _type allows")
    code = re.split(r"[:.]", name, maxsplit=1)[0]
    if code == HAS:
        raise invalid(path, _NO_REVERSE_CHAINS)
    allowed = topic.can_filter_by.get(resource_type, frozenset()) | topic.can_filter_by.get(
        ANY_RESOURCE, frozenset()
    )
    if ANY_PARAMETER not in allowed and code not in allowed:
        listed = ", ".join(sorted(allowed)) or "no filters"
        raise invalid(
            path,
            f"topic {topic.url} does not allow filtering {resource_type} by {code!r};"
            f" it allows: {listed}",
        )
    _check_written_modifier(topic, resource_type, code, name, path)
    parsed = _forward_criterion(resource_type, name, value, path, now)
    check_modifiers(topic, resource_type, code, parsed, path)
    return Filter(resource_type, parsed, text, path)


def _check_written_modifier(
    topic: Topic, resource_type: str, code: str, name: str, path: str
) -> None:
    """A modifier the topic does not list is refused as such before the value is parsed (a
    modifier the topic does not allow is the answer, whether or not the search takes it)."""
    modifier = name.partition(":")[2]
    param = d.search_params(resource_type).get(code)
    if modifier and "." not in name and param is not None:
        check_modifiers(topic, resource_type, code, Criterion(param, modifier, ()), path)


def _forward_criterion(
    resource_type: str, name: str, value: str, path: str, now: datetime | None
) -> Criterion:
    """A filter's criterion; reverse chains (`_has`) refused, with the reason."""
    if name.partition(":")[0] == HAS:
        raise invalid(path, _NO_REVERSE_CHAINS)
    parsed = criterion(resource_type, name, value, path, now)
    if any(link.reverse for link in parsed.chain):
        raise invalid(path, _NO_REVERSE_CHAINS)
    return parsed


def _default_type(topic: Topic, types: frozenset[str] | None, path: str, text: str) -> str:
    """The type of a filter written without one: the single `_type`, else the topic's only
    resource type."""
    if types is not None and len(types) == 1:
        return next(iter(types))
    triggered = {trigger.resource_type for trigger in topic.triggers}
    if len(triggered) == 1 and ANY_RESOURCE not in triggered:
        return next(iter(triggered))
    raise invalid(
        path,
        f"say which resource type {text!r} is about (Type?{text}); topic {topic.url} is about"
        f" {'every resource type' if ANY_RESOURCE in triggered else ', '.join(sorted(triggered))}",
    )


def _allows_type_filter(topic: Topic) -> bool:
    return any(TYPE_CODE in names for names in topic.can_filter_by.values()) or (
        ANY_PARAMETER in topic.can_filter_by.get(ANY_RESOURCE, frozenset())
    )


def _check_focus(topic: Topic, resource_type: str, path: str) -> None:
    if resource_type not in d.resource_types():
        raise invalid(path, f"unknown resource type {resource_type!r}")
    types = {trigger.resource_type for trigger in topic.triggers}
    if resource_type not in types and ANY_RESOURCE not in types:
        raise invalid(
            path, f"topic {topic.url} is about {', '.join(sorted(types))}, not {resource_type}"
        )


# -- the rest -------------------------------------------------------------------------------------


def _status(resource: dict[str, Any]) -> SubscriptionState:
    status = string(resource, "status", PATH, required=True)
    if status not in STATUSES:
        raise invalid(f"{PATH}.status", f"expects requested, active, error or off (got {status!r})")
    return cast(SubscriptionState, status)


def _end(resource: dict[str, Any]) -> datetime | None:
    text = string(resource, "end", PATH)
    if text is None:
        return None
    try:
        end = datetime.fromisoformat(text)
    except ValueError:
        end = None
    if end is None or (end.tzinfo is None and len(text) != len("YYYY-MM-DD")):
        raise invalid(
            f"{PATH}.end",
            f"expects an instant with a time zone, e.g. 2026-01-01T00:00:00Z (got {text!r})",
        )
    return end if end.tzinfo is not None else end.replace(tzinfo=UTC)


def _secret(resource: dict[str, Any]) -> str | None:
    found = single_extension(resource, SIGNING_SECRET, PATH)
    if found is None:
        return None
    path, extension = found
    secret = extension_value(extension, "valueString", path)
    if not isinstance(secret, str) or not secret:
        raise invalid(f"{path}.valueString", "the signing secret must be a non-empty string")
    return secret
