"""The audit trail as FHIR: `GET [base]/AuditEvent` and `GET [base]/AuditEvent/{id}`.

Each audit entry (`fhirstore.access.audit`) is shown as an R4B AuditEvent (`audit_event`),
made from its row when read: audit entries are not stored as resources, so they make no change
events. Only administrators may read them (403 for anyone else); reading flushes this process's
buffer first, so it sees everything it recorded up to that moment. AuditEvent is read-only:
creating or changing one (REST or Bundle) is refused with 405, as is deleting one.

Search (`GET` or `POST .../_search`), newest first, `_count` at a time with a `next` link:

- `date`: when recorded; `eq` (the default), `ge`, `gt`, `le`, `lt`; repeat it for a range;
- `agent`: the subject or client (the value of `agent.who.identifier`);
- `entity`: `Type/id` or `id`; `entity-type`: `Type`;
- `subtype`: the interaction (`read`, `search-type`, `$events`, `rest-hook`, ...);
- `type`: `rest`, `110106` (a delivery: DICOM Export) or `110114` (a refused token: User
  Authentication);
- `request-id` (Herald's own): the request's `X-Request-ID`, the `request_id` of its log lines.

A REST request's id is shown as IHE BALP shows it: an `entity` of type `XrequestId` whose
`what.identifier.value` is the id.

Values of one parameter separated by commas are alternatives; `_before` (the paging cursor)
lists entries stored before that one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhirstore.access.audit import (
    DELIVERED,
    AuditEntry,
    AuditFilter,
    AuditKind,
    AuditTrail,
    StoredEntry,
)
from fhirstore.access.scopes import Interaction
from fhirstore.api.auth import boundary_router, request_access, request_principal
from fhirstore.api.http import FhirResponse, read_form_body, whole_number
from fhirstore.db.writer import fhir_instant
from fhirstore.errors import FhirError, Forbidden, InvalidSearch, NotFound
from fhirstore.search.normalize import RESOLUTION
from fhirstore.search.values import parse_date
from fhirstore.wire import AUDIT_SUBTYPE_SYSTEM, AUDIT_TYPE_SYSTEM

AUDIT_EVENT = "AuditEvent"
_RESTFUL = "http://hl7.org/fhir/restful-interaction"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_TYPES: dict[AuditKind, dict[str, str]] = {
    "rest": {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "RESTful Operation",
    },
    "delivery": {"system": _DCM, "code": "110106", "display": "Export"},
    "authentication": {"system": _DCM, "code": "110114", "display": "User Authentication"},
    "system": {
        "system": AUDIT_TYPE_SYSTEM,
        "code": "system-write",
        "display": "Write by a Herald system identity",
    },
}
_KINDS = {coding["code"]: kind for kind, coding in _TYPES.items()}
_ACTIONS = {"create": "C", "update": "U", "patch": "U", "delete": "D"}
_READS = ("read", "vread", "search-type", "search-system")
_RESTFUL_CODES = frozenset(
    {*_ACTIONS, *_READS, "history-instance", "history-type", "history-system"}
    | {"transaction", "batch"}
)
_PARAMS = (
    *("_count", "_before", "date", "agent", "entity", "entity-type", "subtype", "type"),
    "request-id",
)
_BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
_BOUNDS = ("eq", "ge", "gt", "le", "lt")
_ID = re.compile(r"[0-9]{1,18}")


class ReadOnly(FhirError):
    status = 405
    code = "not-supported"


async def refuse_writes(_resource: dict[str, Any]) -> dict[str, Any]:
    """A store rule for AuditEvent: clients cannot write the audit trail."""
    raise ReadOnly(
        "AuditEvent is Herald's own audit trail and is read-only: it records requests and "
        "deliveries itself; store other audit records under another type (e.g. Provenance)"
    )


def audit_event_router(
    trail: AuditTrail,
    *,
    prefix: str,
    public_base: str | None,
    max_body_bytes: int,
    default_count: int,
    max_count: int,
) -> APIRouter:
    """The AuditEvent routes: include before the generic `/{type}` routes."""
    router = boundary_router(f"{prefix}/{AUDIT_EVENT}")

    async def search(request: Request, params: list[tuple[str, str]]) -> Response:
        now = trail.clock.now()
        where, before, count = _search_request(params, now, default_count, max_count)
        await trail.flush()
        found = await trail.entries(where, before=before, count=count + 1)
        base = public_base or str(request.base_url).rstrip("/") + prefix
        return FhirResponse(_searchset(base, params, found[:count], more=len(found) > count))

    @router.get("")
    async def search_get(request: Request) -> Response:
        _require_admin(request, "s")
        return await search(request, request.query_params.multi_items())

    @router.post("/_search")
    async def search_post(request: Request) -> Response:
        _require_admin(request, "s")
        form = await read_form_body(request, max_body_bytes)
        return await search(request, request.query_params.multi_items() + form)

    @router.get("/{entry_id}")
    async def read(request: Request, entry_id: str) -> Response:
        _require_admin(request, "r")
        await trail.flush()
        number = _number(entry_id)
        found = await trail.entry(number) if number is not None else None
        if found is None:
            raise NotFound(f"AuditEvent/{entry_id} is not known")
        return FhirResponse(audit_event(found))

    @router.delete("/{entry_id}")
    async def delete(entry_id: str) -> Response:
        raise ReadOnly(
            f"AuditEvent/{entry_id} is part of Herald's audit trail: it cannot be deleted"
        )

    return router


def audit_capabilities(statement: dict[str, Any]) -> None:
    """An addition for `fhir_router`: what the AuditEvent entry really supports."""
    for rest in statement.get("rest", []):
        for resource in rest.get("resource", []):
            if resource.get("type") == AUDIT_EVENT:
                resource.clear()
                resource.update(_CAPABILITY)


_CAPABILITY: dict[str, Any] = {
    "type": AUDIT_EVENT,
    "documentation": "Herald's audit trail of requests and deliveries: read-only, for "
    "administrators (HERALD_ADMIN_SCOPE)",
    "interaction": [{"code": "read"}, {"code": "search-type"}],
    "versioning": "no-version",
    "readHistory": False,
    "updateCreate": False,
    "searchParam": [
        {"name": "date", "type": "date"},
        {"name": "agent", "type": "token"},
        {"name": "entity", "type": "reference"},
        {"name": "entity-type", "type": "token"},
        {"name": "subtype", "type": "token"},
        {"name": "type", "type": "token"},
        {
            "name": "request-id",
            "type": "token",
            "documentation": "the request's X-Request-ID (the request_id of its log lines)",
        },
    ],
}


def _require_admin(request: Request, interaction: Interaction) -> None:
    if not request_principal(request).admin:
        raise Forbidden(
            "the audit trail (AuditEvent) is for administrators: this needs a token with the "
            "administrator scope (HERALD_ADMIN_SCOPE, herald/admin unless configured otherwise)"
        )
    request_access(request).reach(AUDIT_EVENT, interaction)  # names the grant in the trail


# -- search parameters ------------------------------------------------------------------------


def _search_request(
    params: Sequence[tuple[str, str]], now: datetime, default_count: int, max_count: int
) -> tuple[AuditFilter, int | None, int]:
    """(what to list, the paging cursor, how many); 400 for what cannot be answered."""
    values: dict[str, list[str]] = {}
    for name, value in params:
        if name not in _PARAMS:
            raise InvalidSearch(
                f"AuditEvent cannot be searched by {name!r}; the parameters are "
                f"{', '.join(_PARAMS)}"
            )
        values.setdefault(name, []).append(value)
    since, until = _dates(values.get("date", []), now)
    before = _single(values, "_before")
    count = _single(values, "_count")
    where = AuditFilter(
        since=since,
        until=until,
        agents=_alternatives(values, "agent"),
        entities=tuple(_entity(v) for v in _alternatives(values, "entity"))
        + tuple((t, None) for t in _alternatives(values, "entity-type")),
        interactions=tuple(_code(v) for v in _alternatives(values, "subtype")),
        kinds=tuple(_kind(v) for v in _alternatives(values, "type")),
        request_ids=_alternatives(values, "request-id"),
    )
    cursor = _number(before) if before is not None else None
    if before is not None and cursor is None:
        raise InvalidSearch(f"_before is the id of an AuditEvent, not {before!r}")
    return (
        where,
        cursor,
        max(1, min(whole_number(count, "_count"), max_count)) if count else default_count,
    )


def _number(text: str) -> int | None:
    """An AuditEvent id as the table's key; None when it cannot be one."""
    return int(text) if _ID.fullmatch(text) else None


def _single(values: dict[str, list[str]], name: str) -> str | None:
    given = values.get(name, [])
    if len(given) > 1:
        raise InvalidSearch(f"give {name} once")
    return given[0] if given else None


def _alternatives(values: dict[str, list[str]], name: str) -> tuple[str, ...]:
    given = _single(values, name)
    if given is None:
        return ()
    if "" in (parts := given.split(",")):
        raise InvalidSearch(f"{name} has an empty value: {given!r}")
    return tuple(parts)


def _dates(given: list[str], now: datetime) -> tuple[datetime | None, datetime | None]:
    """The (inclusive, exclusive) bounds every `date` value sets together."""
    since: datetime | None = None
    until: datetime | None = None
    for text in given:
        try:
            value = parse_date(text, now)
        except ValueError as error:
            raise InvalidSearch(f"date {text!r}: {error}") from None
        if value.prefix not in _BOUNDS:
            raise InvalidSearch(f"date takes the prefixes {', '.join(_BOUNDS)}, not {text!r}")
        low = datetime.fromtimestamp(value.low, UTC)
        after = datetime.fromtimestamp(value.high, UTC) + timedelta(seconds=RESOLUTION)
        lower = {"eq": low, "ge": low, "gt": after}.get(value.prefix)
        upper = {"eq": after, "le": after, "lt": low}.get(value.prefix)
        if lower is not None:
            since = max(since, lower) if since else lower
        if upper is not None:
            until = min(until, upper) if until else upper
    return since, until


def _entity(text: str) -> tuple[str | None, str | None]:
    res_type, slash, res_id = text.rpartition("/")
    return (res_type or None, res_id) if slash else (None, text)


def _code(text: str) -> str:
    return text.rpartition("|")[2]  # system|code or code


def _kind(text: str) -> AuditKind:
    kind = _KINDS.get(_code(text))
    if kind is None:
        raise InvalidSearch(f"type is one of {', '.join(_KINDS)}, not {text!r}")
    return kind


# -- rendering --------------------------------------------------------------------------------


def _searchset(
    base: str, params: Sequence[tuple[str, str]], found: Sequence[StoredEntry], *, more: bool
) -> dict[str, Any]:
    kept = [(k, v) for k, v in params if k != "_before"]
    url = f"{base}/{AUDIT_EVENT}"
    links = [{"relation": "self", "url": f"{url}?{urlencode(params)}".rstrip("?")}]
    if more:
        links.append(
            {"relation": "next", "url": f"{url}?{urlencode([*kept, ('_before', found[-1].id)])}"}
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if found:  # FHIR JSON has no empty arrays
        bundle["entry"] = [
            {
                "fullUrl": f"{url}/{stored.id}",
                "resource": audit_event(stored),
                "search": {"mode": "match"},
            }
            for stored in found
        ]
    return bundle


def audit_event(stored: StoredEntry) -> dict[str, Any]:
    """The R4B AuditEvent of one audit entry."""
    entry = stored.entry
    event: dict[str, Any] = {
        "resourceType": AUDIT_EVENT,
        "id": str(stored.id),
        "type": _TYPES[entry.kind],
        "subtype": _subtype(entry),
        "action": _action(entry),
        "recorded": fhir_instant(stored.recorded_at),
        "outcome": _outcome(entry),
        "outcomeDesc": f"{entry.outcome}: {entry.reason}" if entry.reason else entry.outcome,
        "agent": _agents(entry),
        "source": {
            "observer": {"display": "Herald"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
    }
    entities = _entities(entry)
    if entities:
        event["entity"] = entities
    return event


def _subtype(entry: AuditEntry) -> list[dict[str, str]]:
    code = entry.interaction
    if entry.kind == "delivery":
        kind = {"system": "http://hl7.org/fhir/subscription-notification-type"}
        return [
            {"system": AUDIT_SUBTYPE_SYSTEM, "code": code},
            {**kind, "code": str(entry.notification)},
        ]
    if code in _RESTFUL_CODES:
        return [{"system": _RESTFUL, "code": code}]
    if code.startswith("$"):
        return [
            {"system": _RESTFUL, "code": "operation"},
            {"system": AUDIT_SUBTYPE_SYSTEM, "code": code},
        ]
    return [{"system": AUDIT_SUBTYPE_SYSTEM, "code": code}]


def _action(entry: AuditEntry) -> str:
    code = entry.interaction
    if entry.kind == "delivery" or code in _READS or code.startswith("history"):
        return "R"
    return _ACTIONS.get(code, "E")


def _outcome(entry: AuditEntry) -> str:
    """0 success, 4 minor failure (refused, a 4xx, a failed delivery), 8 serious (a 5xx)."""
    if entry.kind == "delivery":
        return "0" if entry.outcome == DELIVERED else "4"
    status = int(entry.outcome)
    return "0" if status < 400 else "4" if status < 500 else "8"


def _agents(entry: AuditEntry) -> list[dict[str, Any]]:
    user: dict[str, Any] = {"requestor": True}
    if entry.subject is not None:
        user["who"] = {"identifier": {"value": entry.subject}}
    if entry.granted_by:
        user["policy"] = entry.granted_by.split()
    agents = [user]
    if entry.client is not None:
        agents.append(
            {
                "type": {"coding": [{"system": _DCM, "code": "110150", "display": "Application"}]},
                "who": {"identifier": {"value": entry.client}},
                "requestor": False,
            }
        )
    if entry.endpoint is not None:
        destination = {"system": _DCM, "code": "110152", "display": "Destination Role ID"}
        agents.append(
            {
                "type": {"coding": [destination]},
                "who": {"display": entry.endpoint},
                "requestor": False,
                "network": {"address": entry.endpoint, "type": "5"},
            }
        )
    return agents


def _entities(entry: AuditEntry) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if entry.res_type is not None:
        what: dict[str, Any] = {
            "type": {"system": "http://hl7.org/fhir/resource-types", "code": entry.res_type}
        }
        if entry.res_id is not None:
            what["what"] = {"reference": f"{entry.res_type}/{entry.res_id}"}
        details = _details(entry)
        if details:
            what["detail"] = details
        found.append(what)
    if entry.patient is not None:
        found.append(
            {
                "what": {"reference": f"Patient/{entry.patient}"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
        )
    if entry.request_id is not None:
        found.append(
            {
                "what": {"identifier": {"value": entry.request_id}},
                "type": {"system": _BALP_ENTITY, "code": "XrequestId", "display": "XrequestId"},
            }
        )
    return found


def _details(entry: AuditEntry) -> list[dict[str, str]]:
    details = []
    if entry.query is not None:
        details.append({"type": "parameters", "valueString": entry.query})
    first, last = entry.first_event, entry.last_event
    if first is not None:
        numbers = f"{first}" if first == last else f"{first}-{last}"
        details.append({"type": "eventNumbers", "valueString": numbers})
    return details
