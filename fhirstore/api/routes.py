"""FHIR REST interactions: create, read, vread, update, delete, history, search, Bundles."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhirstore import bundles, fhirjson
from fhirstore.api.auth import boundary_router, request_access
from fhirstore.api.capability import capability_statement
from fhirstore.api.http import (
    FhirResponse,
    etag,
    http_date,
    parse_if_match,
    read_form_body,
    read_json_body,
    whole_number,
)
from fhirstore.api.negotiation import fhir_media_type, requested_fhir_version
from fhirstore.db.writer import WrittenVersion, fhir_instant
from fhirstore.errors import BadRequest, PayloadTooLarge
from fhirstore.search.query import parse_search
from fhirstore.store import Store
from fhirstore.stored import StoredVersion
from fhirstore.transaction import process_batch, process_transaction
from fhirstore.validation import require_id, require_type

Version = WrittenVersion | StoredVersion


def fhir_router(
    store: Store,
    *,
    prefix: str = "/fhir",
    public_base: str | None = None,
    max_body_bytes: int,
    default_count: int = 50,
    max_count: int = 1000,
    max_bundle_entries: int = 1000,
    software_version: str = "0",
    capability_additions: Sequence[Callable[[dict[str, Any]], None]] = (),
) -> APIRouter:
    """The REST API. `capability_additions` add what other packages serve (e.g. subscription
    topics and operations) to the CapabilityStatement."""
    public = APIRouter(prefix=prefix)  # the CapabilityStatement only: clients read it first
    router = boundary_router(prefix)

    def base_url(request: Request) -> str:
        """Absolute base for links: configured, or taken from the request."""
        return public_base or str(request.base_url).rstrip("/") + prefix

    @public.get("/metadata")
    async def metadata(request: Request) -> Response:
        version = requested_fhir_version(request)
        statement = capability_statement(
            base_url(request),
            software_version=software_version,
            now=fhir_instant(store.clock.now()),
            fhir_version=version,
        )
        for add in capability_additions:  # they read `fhirVersion` where the versions differ
            add(statement)
        return FhirResponse(statement, media_type=fhir_media_type(version))

    @router.post("")
    @router.post("/", include_in_schema=False)
    async def bundle(request: Request) -> Response:
        body = await read_json_body(request, max_body_bytes)
        kind = body.get("type") if isinstance(body, dict) else None
        entries = body.get("entry") if isinstance(body, dict) else None
        if isinstance(entries, list) and len(entries) > max_bundle_entries:
            raise PayloadTooLarge(
                f"the Bundle has {len(entries)} entries; this server takes at most "
                f"{max_bundle_entries} per Bundle (HERALD_MAX_BUNDLE_ENTRIES): split it into "
                f"smaller Bundles, or load files with `herald load`"
            )
        access = request_access(request)
        if kind == "transaction":
            return FhirResponse(await process_transaction(store, body, access))
        if kind == "batch":
            return FhirResponse(await process_batch(store, body, access))
        raise BadRequest(
            f"POST to the base URL takes a Bundle of type batch or transaction, not {kind!r}"
        )

    @router.get("/_history")
    async def system_history(request: Request) -> Response:
        return await _history(request, None, None)

    @router.get("/{resource_type}/_history")
    async def type_history(request: Request, resource_type: str) -> Response:
        return await _history(request, resource_type, None)

    @router.get("/{resource_type}/{resource_id}/_history")
    async def instance_history(request: Request, resource_type: str, resource_id: str) -> Response:
        require_id(resource_id)  # e.g. a NUL, which no database can compare
        return await _history(request, resource_type, resource_id)

    async def _history(request: Request, rtype: str | None, rid: str | None) -> Response:
        params = request.query_params
        count = _bounded_int(params.get("_count"), default_count, max_count, "_count")
        offset = _bounded_int(params.get("_offset"), 0, 10**9, "_offset")
        since = _instant(params.get("_since"))
        versions, total = await store.history(
            rtype,
            rid,
            since=since,
            count=count,
            offset=offset,
            access=request_access(request),
        )
        path = "/".join(p for p in (rtype, rid, "_history") if p)
        return FhirResponse(
            bundles.history(
                base_url(request),
                path,
                versions,
                total=total,
                offset=offset,
                count=count,
                since=since,
            )
        )

    @router.get("/{resource_type}")
    async def search_get(request: Request, resource_type: str) -> Response:
        return await _search(request, resource_type, request.query_params.multi_items())

    @router.post("/{resource_type}/_search")
    async def search_post(request: Request, resource_type: str) -> Response:
        require_type(resource_type)
        form = await read_form_body(request, max_body_bytes)
        return await _search(request, resource_type, request.query_params.multi_items() + form)

    async def _search(
        request: Request, resource_type: str, query: list[tuple[str, str]]
    ) -> Response:
        require_type(resource_type)
        search = parse_search(
            resource_type,
            query,
            default_count=default_count,
            max_count=max_count,
            now=store.clock.now(),
            limits=store.search_limits,
        )
        result = await store.search(search, access=request_access(request))
        return FhirResponse(
            bundles.searchset(
                base_url(request),
                resource_type,
                query,
                result.resources,
                result.included,
                total=result.total,
                offset=search.offset,
                count=search.count,
                has_more=result.has_more,
            )
        )

    @router.post("/{resource_type}")
    async def create(request: Request, resource_type: str) -> Response:
        require_type(resource_type)
        body = await read_json_body(request, max_body_bytes)
        condition = request.headers.get("if-none-exist")
        outcome = await store.create(
            body,
            resource_type=resource_type,
            if_none_exist=parse_qsl(condition) if condition else None,
            access=request_access(request),
        )
        status = 201 if outcome.created else 200
        return _version_response(request, outcome.version, status, base_url(request))

    @router.get("/{resource_type}/{resource_id}")
    async def read(request: Request, resource_type: str, resource_id: str) -> Response:
        require_id(resource_id)
        version = await store.read(resource_type, resource_id, access=request_access(request))
        return _version_response(request, version, 200, None)

    @router.get("/{resource_type}/{resource_id}/_history/{version_id}")
    async def vread(
        request: Request, resource_type: str, resource_id: str, version_id: str
    ) -> Response:
        require_id(resource_id)
        number = whole_number(version_id, "the version id after _history/")
        version = await store.vread(
            resource_type, resource_id, number, access=request_access(request)
        )
        return _version_response(request, version, 200, None)

    @router.put("/{resource_type}/{resource_id}")
    async def update(request: Request, resource_type: str, resource_id: str) -> Response:
        require_type(resource_type)
        body = await read_json_body(request, max_body_bytes)
        written = await store.update(
            resource_type,
            resource_id,
            body,
            if_match=parse_if_match(request.headers.get("if-match")),
            access=request_access(request),
        )
        status = 201 if written.created else 200  # also when it re-creates a deleted one
        return _version_response(request, written, status, base_url(request))

    @router.delete("/{resource_type}/{resource_id}")
    async def delete(request: Request, resource_type: str, resource_id: str) -> Response:
        require_id(resource_id)
        written = await store.delete(
            resource_type,
            resource_id,
            if_match=parse_if_match(request.headers.get("if-match")),
            access=request_access(request),
        )
        headers = {"ETag": etag(written.version_id)} if written else {}
        return Response(status_code=204, headers=headers)

    both = APIRouter()
    both.include_router(public)  # before `/{resource_type}`, which would take `metadata`
    both.include_router(router)
    return both


def _version_response(
    request: Request, version: Version, status: int, base: str | None
) -> Response:
    body = version.body
    headers = {
        "ETag": etag(version.version_id),
        "Last-Modified": http_date(version.last_updated),
    }
    if base is not None:
        headers["Location"] = (
            f"{base}/{version.resource_type}/{version.id}/_history/{version.version_id}"
        )
    prefer = request.headers.get("prefer", "")
    if "return=minimal" in prefer:
        return Response(status_code=status, headers=headers)
    content: Any = body if isinstance(body, str) else fhirjson.dumps(body)
    return FhirResponse(content, status_code=status, headers=headers)


def _bounded_int(raw: str | None, default: int, maximum: int, name: str) -> int:
    if raw is None:
        return default
    return min(whole_number(raw, name), maximum)


def _instant(raw: str | None) -> datetime | None:
    """`_since`: an instant with a time zone, converted to UTC."""
    if raw is None:
        return None
    example = "such as 2024-01-01T00:00:00Z or 2024-01-01T00:00:00%2B01:00 (+ is %2B in a URL)"
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"_since {raw!r} is not a FHIR instant {example}") from None
    if moment.tzinfo is None:
        raise BadRequest(f"_since {raw!r} has no time zone; give one, {example}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"_since {raw!r} is out of range; give an instant {example}") from None
