"""Batch and transaction Bundles.

A transaction is all-or-nothing. Every entry is parsed and validated first. Then, inside one
`write_transaction`: conditional creates (`ifNoneExist`) are resolved, new ids are assigned,
references to entries' fullUrls (`urn:uuid:` or other) are rewritten to the resource each entry
now stands for (a new one, or the existing one its condition matched) and all writes are applied.
A batch runs each entry on its own and reports each outcome; one failing entry, whatever the
cause, leaves the others' results standing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore import fhirjson
from fhirstore.access.boundary import Access, Reach
from fhirstore.access.narrowing import Narrowing
from fhirstore.access.scopes import Interaction
from fhirstore.api.http import parse_if_match
from fhirstore.db.writer import PendingWrite, WrittenVersion, fhir_instant, lock_condition
from fhirstore.errors import (
    BadRequest,
    FhirError,
    NotFound,
    PreconditionFailed,
    UnknownResourceType,
    operation_outcome,
)
from fhirstore.search.limits import SearchLimits
from fhirstore.search.match import matches
from fhirstore.search.page import ResponseBudget
from fhirstore.search.query import SearchRequest, parse_search
from fhirstore.search.sql import run_search
from fhirstore.store import Store, new_id
from fhirstore.validation import ID_PATTERN, require_type, validate_resource

log = logging.getLogger(__name__)

_METHODS = ("GET", "POST", "PUT", "DELETE")
# request.url relative to the base: `Type` or `Type/id` (the id is checked on its own).
_PATH = re.compile(r"/?(?P<type>[A-Za-z]+)(?:/(?P<id>[^/]*))?")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_URL_FORMS = "'Patient', 'Patient/123' or, for a GET, 'Patient?name=smith'"


@dataclass(slots=True)
class _Entry:
    index: int
    method: str
    resource_type: str
    resource_id: str | None
    query: list[tuple[str, str]]
    resource: dict[str, Any] | None
    full_url: str | None
    if_match: int | None
    if_none_exist: list[tuple[str, str]] | None  # search criteria, e.g. identifier=urn:mrn|1
    existing: dict[str, Any] | None = None  # what `if_none_exist` matched
    response: dict[str, Any] = field(default_factory=dict)
    # What the client may reach with this entry's interaction (None: not narrowed).
    reach: Reach | None = None
    narrowing: Narrowing | None = None
    may_create: bool = True  # a PUT that finds nothing may create (a `c` scope)
    # Validated before the checks, with the Bundle's other entries: with what it found.
    validated: bool = False
    problem: FhirError | None = None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def _parse_entry(index: int, raw: Any) -> _Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise BadRequest(
            f"{where} has no request; give each entry a request with method and url",
            expression=[where],
        )
    request = raw["request"]
    method = _method(request.get("method"), where)
    resource_type, resource_id, query = _target(request.get("url"), method, where)
    resource = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise BadRequest(
            f"{where}: {method} needs the resource to write in entry.resource",
            expression=[f"{where}.resource"],
        )
    full_url = raw.get("fullUrl")
    if_match = parse_if_match(
        request.get("ifMatch"),
        name=f"{where}.request.ifMatch",
        expression=[f"{where}.request.ifMatch"],
    )
    if_none_exist = _condition(request.get("ifNoneExist"), where)
    return _Entry(
        index=index,
        method=method,
        resource_type=resource_type,
        resource_id=resource_id,
        query=query,
        resource=resource if method in ("POST", "PUT") else None,
        full_url=full_url if isinstance(full_url, str) else None,
        if_match=if_match,
        if_none_exist=if_none_exist if method == "POST" else None,
    )


def _method(value: Any, where: str) -> str:
    method = value.upper() if isinstance(value, str) else ""
    if method not in _METHODS:
        raise BadRequest(
            f"{where}.request.method {value!r} is not supported; use GET, POST, PUT or DELETE",
            expression=[f"{where}.request.method"],
        )
    return method


def _target(url: Any, method: str, where: str) -> tuple[str, str | None, list[tuple[str, str]]]:
    """request.url -> (type, id or None, search query); 400 naming the element otherwise."""
    parts = _relative_url(url, where)
    path = _PATH.fullmatch(parts.path)
    if path is None:
        raise _bad_url(where, f"{url!r} is not 'Type' or 'Type/id'; use {_URL_FORMS}")
    resource_type, resource_id = path["type"], path["id"]
    try:
        require_type(resource_type)
    except UnknownResourceType as error:
        raise _bad_url(where, f"names an unknown type: {error.diagnostics}") from None
    if resource_id is not None and not ID_PATTERN.fullmatch(resource_id):
        raise _bad_url(
            where, f"{url!r} has an invalid id: ids are 1-64 characters of A-Z, a-z, 0-9, '-', '.'"
        )
    if parts.query and (method != "GET" or resource_id is not None):
        raise _bad_url(
            where,
            f"{url!r} has a query, which only a search (GET 'Type?params') may have; "
            f"conditional update and delete are not supported, use 'Type/id'",
        )
    if method == "POST" and resource_id is not None:
        raise _bad_url(
            where,
            f"{url!r} names an id, but POST creates with a server-assigned id; send "
            f"'{resource_type}', or PUT '{resource_type}/{resource_id}' to choose the id",
        )
    if method in ("PUT", "DELETE") and resource_id is None:
        raise _bad_url(
            where, f"{url!r} has no id; {method} needs 'Type/id', e.g. '{resource_type}/123'"
        )
    return resource_type, resource_id, parse_qsl(parts.query, keep_blank_values=True)


def _relative_url(url: Any, where: str) -> SplitResult:
    """request.url split, when it is a string relative to the server base."""
    if not isinstance(url, str):
        raise _bad_url(where, f"must be a string such as {_URL_FORMS}, not {url!r}")
    if _CONTROL_OR_SPACE.search(url):
        raise _bad_url(where, f"{url!r} contains spaces or control characters; percent-encode them")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _bad_url(where, f"{url!r} is not a URL ({exc}); use {_URL_FORMS}") from None
    if parts.scheme or parts.netloc or parts.fragment:
        raise _bad_url(where, f"{url!r} is not relative to the server base; use {_URL_FORMS}")
    return parts


def _bad_url(where: str, problem: str) -> BadRequest:
    return BadRequest(f"{where}.request.url {problem}", expression=[f"{where}.request.url"])


def _condition(value: Any, where: str) -> list[tuple[str, str]] | None:
    """ifNoneExist: the search query (without `Type?`) that must match nothing to create."""
    if value is None:
        return None
    criteria = parse_qsl(value) if isinstance(value, str) else []
    if not criteria:
        raise BadRequest(
            f"{where}.request.ifNoneExist {value!r} is not a search query; send the query "
            f"part only, e.g. 'identifier=http://hospital.example/mrn|12345'",
            expression=[f"{where}.request.ifNoneExist"],
        )
    return criteria


_INTERACTIONS: dict[str, Interaction] = {"POST": "c", "PUT": "u", "DELETE": "d"}
# Conditional creates on one identifier value resolved by one search (`_resolve_identifiers`).
_TOGETHER = 50


async def _check(store: Store, entry: _Entry, access: Access | None) -> None:
    if access is not None:
        interaction = _INTERACTIONS.get(entry.method) or ("r" if entry.resource_id else "s")
        entry.reach = access.reach(entry.resource_type, interaction)
        # A conditional create hands back what its condition matched: only what it may read.
        seen = access.reach(entry.resource_type, "r") if entry.if_none_exist else entry.reach
        entry.narrowing = Narrowing(seen, access)
        entry.may_create = access.may(entry.resource_type, "c") is not None
    if entry.resource is None:
        if entry.method == "DELETE":
            store.require_changeable(entry.resource_type, entry.resource_id, None, access)
        return
    if entry.problem is not None:  # validated with the Bundle's other entries
        raise entry.problem
    if not entry.validated:
        validate_resource(entry.resource_type, entry.resource, path=f"{entry.where}.resource")
    put_id = entry.resource_id if entry.method == "PUT" else None
    entry.resource = await store.client_body(entry.resource, access, entry.reach, put_id)
    body_id = entry.resource.get("id")
    if entry.method == "PUT" and body_id not in (None, entry.resource_id):
        raise BadRequest(
            f"{entry.where}: the resource's id {body_id!r} does not match request.url's id "
            f"{entry.resource_id!r}; send the same id in both, or leave it out of the resource",
            expression=[f"{entry.where}.resource.id"],
        )


async def _resolve_conditions(
    conn: AsyncConnection, entries: Sequence[_Entry], now: datetime, limits: SearchLimits
) -> None:
    """Match each conditional create against what is stored, inside the write transaction."""
    conditional = [e for e in entries if e.if_none_exist is not None]
    # The same key as a REST conditional create, so the two serialise with each other; taken in
    # one order, so that two Bundles with the same conditions cannot deadlock.
    keys = {(e.resource_type, urlencode(sorted(e.if_none_exist or ()))) for e in conditional}
    for resource_type, condition in sorted(keys):
        await lock_condition(conn, resource_type, condition)
    for entry in await _resolve_identifiers(conn, conditional, now, limits):
        criteria = [*(entry.if_none_exist or ()), ("_count", "2")]
        search = parse_search(entry.resource_type, criteria, now=now, limits=limits)
        found = (await run_search(conn, search, entry.narrowing)).resources
        _matched(entry, [fhirjson.loads(body) for body in found])


def _matched(entry: _Entry, found: Sequence[dict[str, Any]]) -> None:
    """What a conditional create's condition matched: nothing, one resource (the entry then
    answers with it), or more (refused)."""
    if len(found) > 1:
        raise PreconditionFailed(
            f"{entry.where}.request.ifNoneExist matches more than one {entry.resource_type}; "
            f"make the criteria specific enough to match at most one",
            expression=[f"{entry.where}.request.ifNoneExist"],
        )
    if found:
        entry.existing = dict(found[0])
        entry.resource_id = entry.existing["id"]
        entry.response = _existing_response(entry.existing)


async def _resolve_identifiers(
    conn: AsyncConnection, entries: Sequence[_Entry], now: datetime, limits: SearchLimits
) -> list[_Entry]:
    """Resolve the conditional creates whose condition is one `identifier` value, many of one
    type with one search (`identifier=a,b,...`), each then matching what it found in memory
    with the search's own semantics (`search.match`): a Bundle of a thousand such creates (an
    enrolment, an integrator's load) makes tens of searches, not a thousand. Returns the
    entries left to resolve one by one: other conditions, and a chunk whose search found more
    than one page (a value matching many)."""
    by_type: dict[str, list[_Entry]] = {}
    rest: list[_Entry] = []
    for entry in entries:
        condition = entry.if_none_exist or []
        single = len(condition) == 1 and condition[0][0] == "identifier"
        if single and condition[0][1] and not set(condition[0][1]) & {",", "\\"}:
            by_type.setdefault(entry.resource_type, []).append(entry)
        else:
            rest.append(entry)
    size = max(1, min(_TOGETHER, limits.max_or_values))
    for resource_type, together in by_type.items():
        if len(together) == 1:
            rest.extend(together)
            continue
        for start in range(0, len(together), size):
            chunk = together[start : start + size]
            # Each entry's own condition first, so that a bad one is refused as on its own.
            own = [
                parse_search(resource_type, e.if_none_exist or [], now=now, limits=limits)
                for e in chunk
            ]
            values = ",".join(dict.fromkeys((e.if_none_exist or [])[0][1] for e in chunk))
            criteria = [("identifier", values), ("_count", str(2 * len(chunk)))]
            search = parse_search(resource_type, criteria, now=now, limits=limits)
            result = await run_search(conn, search, chunk[0].narrowing)
            if result.has_more:
                rest.extend(chunk)
                continue
            found = [fhirjson.loads(body) for body in result.resources]
            for entry, request in zip(chunk, own, strict=True):
                _matched(entry, [r for r in found if matches(r, request.criteria)])
    return rest


def _link(entries: Sequence[_Entry]) -> None:
    """Give POSTs new ids and point references to entries' fullUrls at their resources."""
    mapping: dict[str, str] = {}
    for entry in entries:
        if entry.method == "POST" and entry.existing is None:
            entry.resource_id = new_id()
        if entry.full_url and entry.resource_id and entry.method in ("POST", "PUT"):
            mapping[entry.full_url] = f"{entry.resource_type}/{entry.resource_id}"
    if not mapping:
        return
    for entry in entries:
        if entry.resource is not None and entry.existing is None:
            entry.resource = _rewrite(entry.resource, mapping)


def _rewrite(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite(v, mapping) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in mapping:
            out["reference"] = mapping[ref]
        return out
    if isinstance(node, list):
        return [_rewrite(v, mapping) for v in node]
    return node


_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}


async def _apply(
    store: Store, conn: AsyncConnection, entries: Sequence[_Entry], budget: ResponseBudget
) -> None:
    """Run checked entries inside one open write transaction, filling each entry's response
    (GET entries within what is left of the response's `budget`)."""
    now = store.clock.now()
    await _resolve_conditions(conn, entries, now, store.search_limits)
    _link(entries)
    for entry in entries:  # a rewritten reference may have moved a resource out of reach
        if entry.reach is not None and entry.resource is not None and entry.existing is None:
            entry.resource["id"] = entry.resource_id  # the id it will have (new for a POST)
            entry.reach.require(entry.resource, entry.where)
    writes = [
        (entry, _pending(entry))
        for entry in sorted(entries, key=lambda e: _ORDER[e.method])
        if entry.method != "GET" and entry.existing is None
    ]
    results = await store.write_batch(conn, [w for _, w in writes])
    for (entry, _), written in zip(writes, results, strict=True):
        entry.response = _written_response(written)
    for entry in entries:
        if entry.method == "GET":
            entry.response = await _read_entry(conn, entry, now, budget)


def _pending(entry: _Entry) -> PendingWrite:
    assert entry.resource_id is not None
    return PendingWrite(
        entry.resource_type,
        entry.resource_id,
        entry.resource,
        entry.if_match,
        new=entry.method == "POST",
        reach=entry.reach,
        may_create=entry.may_create,
    )


async def _read_entry(
    conn: AsyncConnection, entry: _Entry, now: datetime, budget: ResponseBudget
) -> dict[str, Any]:
    limits = budget.limits_for(f"{entry.where}.request.url")
    if entry.resource_id is None:
        search = parse_search(entry.resource_type, entry.query, now=now, limits=limits)
        result = await run_search(conn, search, entry.narrowing)
        budget.spend([*result.resources, *result.included])
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": orjson.Fragment(r)} for r in result.resources],
        }
        if result.has_more:  # relative, like request.url: a later Bundle's GET entry goes on
            following = _next_url(entry, search, len(result.resources))
            bundle["link"] = [{"relation": "next", "url": following}]
        if result.total is not None:
            bundle["total"] = result.total
        return {"resource": bundle, "response": {"status": "200 OK"}}
    request = parse_search(entry.resource_type, [("_id", entry.resource_id)], limits=limits)
    found = (await run_search(conn, request, entry.narrowing)).resources
    budget.spend(found)
    if not found:
        raise NotFound(f"{entry.where}: {entry.resource_type}/{entry.resource_id} not found")
    resource = fhirjson.loads(found[0])
    return {"resource": resource, "response": _existing_response(resource)["response"]}


def _next_url(entry: _Entry, search: SearchRequest, returned: int) -> str:
    """The search of a GET entry, from just after the `returned` matches of its page."""
    kept = [(k, v) for k, v in entry.query if k not in ("_offset", "_count")]
    paging = [("_count", str(search.count)), ("_offset", str(search.offset + returned))]
    return f"{entry.resource_type}?{urlencode([*kept, *paging])}"


def _existing_response(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta", {})
    return {
        "response": {
            "status": "200 OK",
            "location": f"{resource['resourceType']}/{resource['id']}/_history/"
            f"{meta.get('versionId', '1')}",
            "etag": f'W/"{meta.get("versionId", "1")}"',
        }
    }


def _written_response(written: WrittenVersion | None) -> dict[str, Any]:
    if written is None:
        return {"response": {"status": "204 No Content"}}
    status = {"create": "201 Created", "update": "200 OK", "delete": "204 No Content"}
    return {
        "response": {
            "status": status[written.interaction],
            "location": f"{written.resource_type}/{written.id}/_history/{written.version_id}",
            "etag": f'W/"{written.version_id}"',
            "lastModified": fhir_instant(written.last_updated),
        }
    }


def _raw_entries(bundle: Any) -> list[Any]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("POST to the base URL takes a Bundle of type batch or transaction")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be a list", expression=["Bundle.entry"])
    return entries


async def process_transaction(
    store: Store, bundle: Any, access: Access | None = None
) -> dict[str, Any]:
    """All entries or none; `access` (None: Herald's own) applies to each entry."""
    entries = [_parse_entry(i, e) for i, e in enumerate(_raw_entries(bundle))]
    checked = [(e, r) for e in entries if (r := e.resource) is not None]
    items = [(e.resource_type, r, f"{e.where}.resource") for e, r in checked]
    for (entry, _), problem in zip(checked, await store.validation.problems(items), strict=True):
        entry.validated, entry.problem = True, problem
    for entry in entries:
        await _check(store, entry, access)
    budget = ResponseBudget(store.search_limits)
    async with store.write_transaction() as conn:
        await _apply(store, conn, entries, budget)
    return _response_bundle("transaction-response", [e.response for e in entries])


async def process_batch(store: Store, bundle: Any, access: Access | None = None) -> dict[str, Any]:
    """Each entry on its own; GET entries share one response's byte budget (an entry after it
    is spent is answered with a 400 asking for it on its own)."""
    raw = _raw_entries(bundle)
    budget = ResponseBudget(store.search_limits)
    return _response_bundle(
        "batch-response",
        [await _batch_entry(store, i, e, access, budget) for i, e in enumerate(raw)],
    )


async def _batch_entry(
    store: Store, index: int, raw: Any, access: Access | None, budget: ResponseBudget
) -> dict[str, Any]:
    """One batch entry in its own transaction; any failure becomes this entry's response."""
    try:
        entry = _parse_entry(index, raw)
        await _check(store, entry, access)
        async with store.write_transaction() as conn:
            await _apply(store, conn, [entry], budget)
    except FhirError as error:
        return _failed(error.status, error.outcome())
    except Exception:
        log.exception("batch entry %d failed with an unexpected error", index)
        return _failed(
            500,
            operation_outcome(
                f"internal server error on Bundle.entry[{index}]; the details are in the server "
                f"log. The other entries were processed; retry this one, and report it if it "
                f"keeps failing.",
                code="exception",
                expression=[f"Bundle.entry[{index}]"],
            ),
        )
    return entry.response


def _failed(status: int, outcome: dict[str, Any]) -> dict[str, Any]:
    return {"response": {"status": str(status), "outcome": outcome}}


def _response_bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
