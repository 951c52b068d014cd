"""Bundles the server returns: searchset and history. Stored JSON is spliced in, not re-parsed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from fhirstore.db.writer import fhir_instant
from fhirstore.stored import StoredVersion

_METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}
_STATUS = {"create": "201 Created", "update": "200 OK", "delete": "204 No Content"}


def _resource_ref(text: str) -> tuple[str, str]:
    head = orjson.loads(text)
    return head["resourceType"], head["id"]


def searchset(
    base: str,
    resource_type: str,
    query: Sequence[tuple[str, str]],
    matches: Sequence[str],
    included: Sequence[str],
    *,
    total: int | None,
    offset: int,
    count: int,
    has_more: bool,
) -> dict[str, Any]:
    entries = [_search_entry(base, body, "match") for body in matches]
    entries += [_search_entry(base, body, "include") for body in included]
    kept = [(k, v) for k, v in query if k not in ("_offset", "_count")]
    links = [{"relation": "self", "url": _page_url(base, resource_type, kept, offset, count)}]
    if has_more:  # a page cut short by its byte budget goes on after its last match
        following = offset + len(matches)
        links.append(
            {"relation": "next", "url": _page_url(base, resource_type, kept, following, count)}
        )
    if offset > 0:
        previous = max(0, offset - count)
        links.append(
            {"relation": "previous", "url": _page_url(base, resource_type, kept, previous, count)}
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "link": links,
        "entry": entries,
    }
    if total is not None:
        bundle["total"] = total
    return bundle


def _search_entry(base: str, body: str, mode: str) -> dict[str, Any]:
    rtype, rid = _resource_ref(body)
    return {
        "fullUrl": f"{base}/{rtype}/{rid}",
        "resource": orjson.Fragment(body),
        "search": {"mode": mode},
    }


def _page_url(
    base: str, resource_type: str, query: list[tuple[str, str]], offset: int, count: int
) -> str:
    params = [*query, ("_count", str(count))]
    if offset:
        params.append(("_offset", str(offset)))
    return f"{base}/{resource_type}?{urlencode(params)}"


def history(
    base: str,
    path: str,
    versions: Sequence[StoredVersion],
    *,
    total: int,
    offset: int,
    count: int,
    since: datetime | None = None,
) -> dict[str, Any]:
    kept = [("_since", since.isoformat().replace("+00:00", "Z"))] if since else []
    links = [{"relation": "self", "url": _history_url(base, path, kept, offset, count)}]
    following = offset + len(versions)  # a page cut short by its byte budget goes on from there
    if versions and following < total:
        links.append({"relation": "next", "url": _history_url(base, path, kept, following, count)})
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "total": total,
        "link": links,
        "entry": [_history_entry(base, v) for v in versions],
    }


def _history_url(
    base: str, path: str, query: list[tuple[str, str]], offset: int, count: int
) -> str:
    return f"{base}/{path}?{urlencode([*query, ('_count', str(count)), ('_offset', str(offset))])}"


def _history_entry(base: str, v: StoredVersion) -> dict[str, Any]:
    url = f"{v.resource_type}/{v.id}"
    entry: dict[str, Any] = {
        "fullUrl": f"{base}/{url}",
        "request": {"method": _METHOD.get(v.method, "PUT"), "url": url},
        "response": {
            "status": _STATUS.get(v.method, "200 OK"),
            "etag": f'W/"{v.version_id}"',
            "lastModified": fhir_instant(v.last_updated),
        },
    }
    if v.body is not None:
        entry["resource"] = orjson.Fragment(v.body)
    return entry
