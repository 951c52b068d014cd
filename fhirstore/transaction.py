"""Batch and transaction Bundles.

A transaction is all-or-nothing: every entry is validated first, `urn:uuid:` (and other fullUrl)
references to resources created in the Bundle are rewritten to their new ids, and all writes go
through one `write_transaction`. A batch runs each entry on its own and reports each outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore import fhirjson
from fhirstore.db.writer import PendingWrite, WrittenVersion, fhir_instant
from fhirstore.errors import BadRequest, FhirError, MethodNotAllowed, NotFound
from fhirstore.search.query import parse_search
from fhirstore.search.sql import run_search
from fhirstore.store import Store, new_id
from fhirstore.validation import require_id, require_type, validate_resource


@dataclass(slots=True)
class _Entry:
    index: int
    method: str
    resource_type: str
    resource_id: str | None
    query: list[tuple[str, str]]
    resource: dict[str, Any] | None
    if_match: int | None
    if_none_exist: list[tuple[str, str]] | None
    response: dict[str, Any] = field(default_factory=dict)


def _parse_entry(index: int, raw: Any) -> _Entry:
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise BadRequest(f"entry[{index}] has no request", expression=[f"Bundle.entry[{index}]"])
    request = raw["request"]
    method = str(request.get("method", "")).upper()
    if method not in ("GET", "POST", "PUT", "DELETE"):
        raise MethodNotAllowed(
            f"entry[{index}]: method {method or '(none)'!r} is not supported; use GET, POST, "
            f"PUT or DELETE"
        )
    url = urlsplit(str(request.get("url", "")))
    parts = [p for p in url.path.split("/") if p]
    if not parts:
        raise BadRequest(f"entry[{index}] has no request.url")
    require_type(parts[0])
    resource = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise BadRequest(f"entry[{index}]: {method} needs a resource")
    return _Entry(
        index=index,
        method=method,
        resource_type=parts[0],
        resource_id=parts[1] if len(parts) > 1 else None,
        query=parse_qsl(url.query, keep_blank_values=True),
        resource=resource if method in ("POST", "PUT") else None,
        if_match=_version_tag(request.get("ifMatch")),
        if_none_exist=parse_qsl(request["ifNoneExist"]) if request.get("ifNoneExist") else None,
    )


def _version_tag(value: Any) -> int | None:
    if not value:
        return None
    cleaned = str(value).removeprefix("W/").strip('"')
    if not cleaned.isdigit():
        raise BadRequest(f'ifMatch {value!r} is not a version ETag such as W/"1"')
    return int(cleaned)


def _assign_ids(entries: list[_Entry], raw_entries: list[Any]) -> dict[str, str]:
    """New ids for POSTs; returns fullUrl -> `Type/id` for reference rewriting."""
    mapping: dict[str, str] = {}
    for entry in entries:
        if entry.method == "POST":
            entry.resource_id = new_id()
        full_url = raw_entries[entry.index].get("fullUrl")
        if isinstance(full_url, str) and entry.resource_id and entry.method in ("POST", "PUT"):
            mapping[full_url] = f"{entry.resource_type}/{entry.resource_id}"
    return mapping


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


def _check(entry: _Entry) -> None:
    if entry.resource is not None:
        validate_resource(entry.resource_type, entry.resource)
    if entry.method in ("PUT", "DELETE"):
        if entry.resource_id is None:
            raise BadRequest(f"entry[{entry.index}]: {entry.method} needs Type/id in request.url")
        require_id(entry.resource_id)
        body_id = (entry.resource or {}).get("id")
        if entry.method == "PUT" and body_id not in (None, entry.resource_id):
            raise BadRequest(f"entry[{entry.index}]: resource id does not match request.url")


_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}


async def _execute(store: Store, conn: AsyncConnection, entries: Sequence[_Entry]) -> None:
    """Run the entries inside one open write transaction, filling each entry's response."""
    now = store.clock.now()
    writes: list[tuple[_Entry, PendingWrite]] = []
    for entry in sorted(entries, key=lambda e: _ORDER[e.method]):
        if entry.method == "GET":
            continue
        if entry.method == "POST" and entry.if_none_exist:
            request = parse_search(
                entry.resource_type, [*entry.if_none_exist, ("_count", "2")], now=now
            )
            found = (await run_search(conn, request)).resources
            if len(found) > 1:
                raise BadRequest(f"entry[{entry.index}]: ifNoneExist matches several resources")
            if found:
                existing = fhirjson.loads(found[0])
                entry.response = _existing_response(existing)
                continue
        assert entry.resource_id is not None
        writes.append(
            (
                entry,
                PendingWrite(
                    entry.resource_type,
                    entry.resource_id,
                    entry.resource,
                    entry.if_match,
                    new=entry.method == "POST",
                ),
            )
        )
    results = await store.write_batch(conn, [w for _, w in writes])
    for (entry, _), written in zip(writes, results, strict=True):
        entry.response = _written_response(entry, written)
    for entry in entries:
        if entry.method == "GET":
            entry.response = await _read_entry(conn, entry, now)


async def _read_entry(conn: AsyncConnection, entry: _Entry, now: datetime) -> dict[str, Any]:
    if entry.resource_id is None:
        result = await run_search(conn, parse_search(entry.resource_type, entry.query, now=now))
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": orjson.Fragment(r)} for r in result.resources],
        }
        if result.total is not None:
            bundle["total"] = result.total
        return {"resource": bundle, "response": {"status": "200 OK"}}
    request = parse_search(entry.resource_type, [("_id", entry.resource_id)])
    found = (await run_search(conn, request)).resources
    if not found:
        raise NotFound(f"entry[{entry.index}]: {entry.resource_type}/{entry.resource_id} not found")
    resource = fhirjson.loads(found[0])
    return {"resource": resource, "response": _existing_response(resource)["response"]}


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


def _written_response(entry: _Entry, written: WrittenVersion | None) -> dict[str, Any]:
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


async def process_transaction(store: Store, bundle: Any) -> dict[str, Any]:
    raw = _raw_entries(bundle)
    entries = [_parse_entry(i, e) for i, e in enumerate(raw)]
    mapping = _assign_ids(entries, raw)
    for entry in entries:
        if entry.resource is not None and mapping:
            entry.resource = _rewrite(entry.resource, mapping)
        _check(entry)
    async with store.write_transaction() as conn:
        await _execute(store, conn, entries)
    return _response_bundle("transaction-response", [e.response for e in entries])


async def process_batch(store: Store, bundle: Any) -> dict[str, Any]:
    raw = _raw_entries(bundle)
    responses: list[dict[str, Any]] = []
    for index, raw_entry in enumerate(raw):
        try:
            entry = _parse_entry(index, raw_entry)
            _assign_ids([entry], raw)
            _check(entry)
            async with store.write_transaction() as conn:
                await _execute(store, conn, [entry])
            responses.append(entry.response)
        except FhirError as error:
            responses.append(
                {"response": {"status": str(error.status), "outcome": error.outcome()}}
            )
    return _response_bundle("batch-response", responses)


def _response_bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
