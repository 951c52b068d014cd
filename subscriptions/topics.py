"""Parse an R4B SubscriptionTopic resource into a `Topic`.

Herald evaluates resource triggers (queryCriteria and fhirPathCriteria) and filters that are
search parameters of the focus type, so a topic that relies on anything else (event triggers,
topic-defined filter parameters, queryCriteria on every resource type) is rejected when it is
stored, with a message naming the element, instead of silently never matching.

`canFilterBy.filterParameter` `*` (Herald's convention, used by the built-in `resource-change`
topic) allows every search parameter of the focus type, `_type` included. `canFilterBy.modifier`
lists the R4B operator codes a filter on the parameter may use (`operators.py`); on a `*` entry
it bounds every parameter the entry allows. An entry naming the parameter itself wins over a
`*` one, and an entry on the focus type over one on every type. Codes outside the R4B value set,
or meaningless on the parameter's type (`gt` on a token), are refused when the topic is stored.
"""

from __future__ import annotations

from typing import Any, cast

from fhirstore.search import Criterion
from fhirstore.search import definitions as d
from subscriptions.criteria import parse_query
from subscriptions.elements import Json, child, children, invalid, string, strings
from subscriptions.fhirpath_budget import FhirPathError, compile_client_fhirpath
from subscriptions.keys import TYPE_CODE
from subscriptions.model import (
    ANY_RESOURCE,
    Interaction,
    QueryCriteria,
    ResourceTrigger,
    ResultWhen,
    Topic,
)
from subscriptions.operators import ANY_PARAMETER, CODES_BY_TYPE, R4B_CODES

STRUCTURE_DEFINITION = "http://hl7.org/fhir/StructureDefinition/"
INTERACTIONS = frozenset({"create", "update", "delete"})
RESULTS = frozenset({"test-passes", "test-fails"})
_ABSTRACT = frozenset({"Resource", "DomainResource"})
# Composite parameters are listed as any other; the search parser says whether it takes them.
_UNSUPPORTED_PARAM_TYPES = frozenset({d.SPECIAL})


def parse_topic(resource: dict[str, Any]) -> Topic:
    """The Topic of a SubscriptionTopic; raises Unprocessable naming the offending element."""
    path = "SubscriptionTopic"
    if resource.get("resourceType") != path:
        raise invalid(path, f"expected a SubscriptionTopic (got {resource.get('resourceType')!r})")
    url = cast(str, string(resource, "url", path, required=True))
    triggers = _triggers(resource, path)
    can_filter_by, filter_modifiers = _can_filter_by(resource, triggers, path)
    return Topic(
        url=url,
        triggers=triggers,
        can_filter_by=can_filter_by,
        filter_modifiers=filter_modifiers,
        title=string(resource, "title", path),
        resource_id=string(resource, "id", path),
    )


def resource_type_of(value: str, path: str) -> str:
    """`Encounter` or `http://hl7.org/fhir/StructureDefinition/Encounter` -> `Encounter`;
    `Resource` / `DomainResource` -> ANY_RESOURCE."""
    name = value.removeprefix(STRUCTURE_DEFINITION)
    if name in _ABSTRACT:
        return ANY_RESOURCE
    if name in d.resource_types():
        return name
    raise invalid(path, f"{value!r} is not an R4B resource type (nor its StructureDefinition URL)")


# -- resourceTrigger ------------------------------------------------------------------------------


def _triggers(resource: Json, path: str) -> tuple[ResourceTrigger, ...]:
    found = children(resource, "resourceTrigger", path)
    if found:
        return tuple(_trigger(node, node_path) for node_path, node in found)
    if resource.get("eventTrigger"):
        raise invalid(
            f"{path}.eventTrigger",
            "event triggers are not supported; describe the topic with resourceTrigger",
        )
    raise invalid(f"{path}.resourceTrigger", "a topic needs at least one resourceTrigger")


def _trigger(node: Json, path: str) -> ResourceTrigger:
    resource = cast(str, string(node, "resource", path, required=True))
    resource_type = resource_type_of(resource, f"{path}.resource")
    query_node = child(node, "queryCriteria", path)
    query = None
    if query_node is not None:
        if resource_type == ANY_RESOURCE:
            raise invalid(
                f"{path}.queryCriteria",
                "queryCriteria needs a concrete resource type; use fhirPathCriteria instead",
            )
        query = _query(query_node, resource_type, f"{path}.queryCriteria")
    return ResourceTrigger(
        resource_type=resource_type,
        interactions=_interactions(node, path),
        query=query,
        fhirpath=_fhirpath(node, path),
    )


def _interactions(node: Json, path: str) -> frozenset[Interaction]:
    found = strings(node, "supportedInteraction", path)
    for item_path, value in found:
        if value not in INTERACTIONS:
            raise invalid(item_path, f"expects create, update or delete (got {value!r})")
    if not found:
        return cast(frozenset[Interaction], INTERACTIONS)
    return frozenset(cast(Interaction, value) for _, value in found)


def _query(node: Json, resource_type: str, path: str) -> QueryCriteria:
    return QueryCriteria(
        previous=_side(node, "previous", resource_type, path),
        current=_side(node, "current", resource_type, path),
        result_for_create=_result(node, "resultForCreate", path),
        result_for_delete=_result(node, "resultForDelete", path),
        require_both=_boolean(node, "requireBoth", path),
    )


def _side(node: Json, key: str, resource_type: str, path: str) -> tuple[Criterion, ...] | None:
    text = string(node, key, path)
    return None if text is None else parse_query(resource_type, text, f"{path}.{key}")


def _result(node: Json, key: str, path: str) -> ResultWhen | None:
    value = string(node, key, path)
    if value is not None and value not in RESULTS:
        raise invalid(f"{path}.{key}", f"expects test-passes or test-fails (got {value!r})")
    return cast(ResultWhen | None, value)


def _boolean(node: Json, key: str, path: str) -> bool:
    value = node.get(key, False)
    if not isinstance(value, bool):
        raise invalid(f"{path}.{key}", f"must be true or false (got {value!r})")
    return value


def _fhirpath(node: Json, path: str) -> str | None:
    expression = string(node, "fhirPathCriteria", path)
    if expression is not None:
        try:
            compile_client_fhirpath(expression)  # compiled only: tried on samples at create
        except FhirPathError as error:
            raise invalid(f"{path}.fhirPathCriteria", str(error)) from None
    return expression


# -- canFilterBy ----------------------------------------------------------------------------------


def _can_filter_by(
    resource: Json, triggers: tuple[ResourceTrigger, ...], path: str
) -> tuple[dict[str, frozenset[str]], dict[str, dict[str, frozenset[str] | None]]]:
    """The parameters allowed per focus type, and the operator codes allowed per parameter
    (None: any; several entries for one parameter allow what any of them allows)."""
    allowed: dict[str, set[str]] = {}
    modifiers: dict[str, dict[str, frozenset[str] | None]] = {}
    for node_path, node in children(resource, "canFilterBy", path):
        focus = _filter_resource(node, triggers, node_path)
        name = cast(str, string(node, "filterParameter", node_path, required=True))
        _check_parameter(name, focus, triggers, f"{node_path}.filterParameter")
        allowed.setdefault(focus, set()).add(name)
        codes = _modifiers(node, name, focus, triggers, node_path)
        by_name = modifiers.setdefault(focus, {})
        if name not in by_name:
            by_name[name] = codes
        else:
            known = by_name[name]
            by_name[name] = None if known is None or codes is None else known | codes
    can_filter_by = {
        focus: frozenset({ANY_PARAMETER}) if ANY_PARAMETER in names else frozenset(names)
        for focus, names in allowed.items()
    }
    return can_filter_by, modifiers


def _modifiers(
    node: Json, name: str, focus: str, triggers: tuple[ResourceTrigger, ...], path: str
) -> frozenset[str] | None:
    """canFilterBy.modifier as a set of R4B codes; None when the entry lists none."""
    found = strings(node, "modifier", path)
    if not found:
        return None
    types = _param_types(name, focus, triggers)
    for item_path, code in found:
        if code not in R4B_CODES:
            raise invalid(
                item_path,
                f"{code!r} is not an R4B subscription-search-modifier code; use one of"
                f" {', '.join(R4B_CODES)}",
            )
        if types and not any(code in CODES_BY_TYPE.get(t, ()) for t in types):
            kinds = " or ".join(sorted(types))
            meaningful = sorted({c for t in types for c in CODES_BY_TYPE.get(t, ())})
            raise invalid(
                item_path,
                f"{code!r} does not apply to {name!r}, a {kinds} parameter; it takes"
                f" {', '.join(c for c in R4B_CODES if c in meaningful)}",
            )
    return frozenset(code for _, code in found)


def _param_types(name: str, focus: str, triggers: tuple[ResourceTrigger, ...]) -> set[str]:
    """The search parameter types `name` has on the types it may be about (empty for `*`)."""
    if name == ANY_PARAMETER:
        return set()
    if name == TYPE_CODE:
        return {d.TOKEN}
    found = set()
    for resource_type in _candidates(focus, triggers):
        param = d.search_params(resource_type).get(name)
        if param is not None:
            found.add(param.type)
    return found


def _trigger_types(triggers: tuple[ResourceTrigger, ...]) -> frozenset[str]:
    return frozenset(trigger.resource_type for trigger in triggers)


def _filter_resource(node: Json, triggers: tuple[ResourceTrigger, ...], path: str) -> str:
    """The focus type a canFilterBy entry is about; when absent, the topic's only type (or
    every type of the topic)."""
    types = _trigger_types(triggers)
    value = string(node, "resource", path)
    if value is None:
        return next(iter(types)) if len(types) == 1 else ANY_RESOURCE
    focus = resource_type_of(value, f"{path}.resource")
    if focus not in types and ANY_RESOURCE not in types:
        raise invalid(
            f"{path}.resource",
            f"{focus} is not a resource this topic triggers on ({_names(types)})",
        )
    return focus


def _check_parameter(
    name: str, focus: str, triggers: tuple[ResourceTrigger, ...], path: str
) -> None:
    if name in (ANY_PARAMETER, TYPE_CODE):
        return
    candidates = _candidates(focus, triggers)
    if not any(_filterable(name, resource_type) for resource_type in candidates):
        raise invalid(
            path,
            f"{name!r} is not a search parameter of {_names(candidates)} that Herald can filter"
            " on (topic-defined filter parameters are not supported)",
        )


def _candidates(focus: str, triggers: tuple[ResourceTrigger, ...]) -> frozenset[str]:
    """The resource types a canFilterBy entry on `focus` may be about."""
    if focus != ANY_RESOURCE:
        return frozenset({focus})
    if ANY_RESOURCE in _trigger_types(triggers):
        return d.resource_types()
    return _trigger_types(triggers)


def _filterable(name: str, resource_type: str) -> bool:
    param = d.search_params(resource_type).get(name)
    return param is not None and param.type not in _UNSUPPORTED_PARAM_TYPES


def _names(types: frozenset[str]) -> str:
    shown = sorted(types)
    return ", ".join(shown) if len(shown) <= 5 else f"{', '.join(shown[:5])}, ..."
