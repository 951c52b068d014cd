"""The Backport IG operations: `Subscription/$status` (type and instance level) and
`Subscription/{id}/$events`. Parameters come from the query string or a Parameters body.

Both answer in the FHIR version the request asks for (`fhirVersion` in `Accept` or `_format`):
R4 statuses are the IG's Parameters form, R4B ones (the default) SubscriptionStatus resources,
whatever version the subscription's own notifications are in; the Content-Type says which."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, get_args

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhirstore import BadRequest, NotFound, Store, Unprocessable
from fhirstore.access import Access, Principal
from fhirstore.api import (
    FhirResponse,
    boundary_router,
    fhir_media_type,
    read_json_body,
    request_access,
    request_principal,
    requested_fhir_version,
)
from subscriptions.focus import notification_events, withhold_unreadable
from subscriptions.ledger import Ledger, SubscriptionProgress
from subscriptions.model import ContentLevel, SubscriptionSpec
from subscriptions.notification import (
    events_bundle,
    status_bundle,
    subscription_status,
)
from subscriptions.registry import SubscriptionRegistry
from subscriptions.status_error import StatusError

_MAX_EVENTS = 1000
_STATUSES = ("requested", "active", "error", "off")


async def stored_spec(
    store: Store,
    registry: SubscriptionRegistry,
    subscription_id: str,
    access: Access | None,
    *,
    unloaded: bool = False,
) -> SubscriptionSpec:
    """The stored Subscription as the matcher sees it: 404 / 410 as for a read (by `access`,
    so only its owner or an administrator finds it). One Herald cannot load is refused with
    its reason (422), or (`unloaded`, for `$status` and `$events`) given as its stand-in."""
    await store.read("Subscription", subscription_id, access=access)
    spec = registry.index.get(subscription_id)
    if spec is None:
        await registry.catch_up()
        spec = registry.index.get(subscription_id)
    if spec is None and (item := registry.unloaded.get(subscription_id)) is not None:
        if not unloaded:
            raise Unprocessable(item.reason, expression=[item.element])
        spec = item.spec
    if spec is None:
        raise NotFound(f"Subscription/{subscription_id} is not known to the matcher yet")
    return spec


def subscription_router(
    store: Store,
    ledger: Ledger,
    registry: SubscriptionRegistry,
    *,
    prefix: str,
    public_base: str | None,
    max_body_bytes: int,
) -> APIRouter:
    router = boundary_router(prefix)

    def base_url(request: Request) -> str:
        return public_base or str(request.base_url).rstrip("/") + prefix

    async def spec_of(request: Request, subscription_id: str) -> SubscriptionSpec:
        return await stored_spec(
            store, registry, subscription_id, request_access(request), unloaded=True
        )

    async def statuses(request: Request, ids: list[str]) -> Response:
        version = requested_fhir_version(request)
        params = await operation_parameters(request, max_body_bytes)
        ids = ids or [i for v in params.get("id", []) for i in v.split(",") if i]
        wanted = {s for v in params.get("status", []) for s in v.split(",") if s}
        if unknown := wanted - set(_STATUSES):
            raise BadRequest(f"unknown status {sorted(unknown)}; use {', '.join(_STATUSES)}")
        if not ids:
            # As a search of Subscriptions would: refused without a scope that searches them.
            request_access(request).reach("Subscription", "s")
            principal = request_principal(request)
            known = [*registry.index.specs(), *(u.spec for u in registry.unloaded.values())]
            ids = [s.id for s in known if owned_by(s, principal)]
        specs = [await spec_of(request, i) for i in ids]
        found = await ledger.progress_of([s.id for s in specs])
        entries = []
        for spec in specs:
            progress = found.get(spec.id)
            status = progress.status if progress else spec.status
            errors = _errors(progress)
            if (item := registry.unloaded.get(spec.id)) is not None:
                # What this registry knows now, whether or not the marking is written yet.
                status, errors = item.spec.status, [StatusError(item.reason)]
            if wanted and status not in wanted:
                continue
            entries.append(
                subscription_status(
                    spec,
                    notification_type="query-status",
                    status=status,
                    events_since_start=progress.events_since_start if progress else 0,
                    events=[],
                    base_url=base_url(request),
                    errors=errors,
                    fhir_version=version,
                )
            )
        return FhirResponse(status_bundle(entries), media_type=fhir_media_type(version))

    @router.api_route("/Subscription/$status", methods=["GET", "POST"])
    async def type_status(request: Request) -> Response:
        return await statuses(request, [])

    @router.api_route("/Subscription/{subscription_id}/$status", methods=["GET", "POST"])
    async def instance_status(request: Request, subscription_id: str) -> Response:
        return await statuses(request, [subscription_id])

    @router.api_route("/Subscription/{subscription_id}/$events", methods=["GET", "POST"])
    async def events(request: Request, subscription_id: str) -> Response:
        version = requested_fhir_version(request)
        params = await operation_parameters(request, max_body_bytes)
        spec = await spec_of(request, subscription_id)
        since = _number(params, "eventsSinceNumber")
        until = _number(params, "eventsUntilNumber")
        content = _content(params) or spec.channel.content
        spec = replace(spec, channel=replace(spec.channel, content=content))
        recorded = await ledger.events(subscription_id, since, until, _MAX_EVENTS)
        progress = await ledger.progress(subscription_id)
        full = content == "full-resource"
        loaded = await notification_events(store, recorded, with_resource=full)
        # The Subscription heard what its owner could read when it was written; the caller
        # sees of that only what its own token may read now.
        loaded = await withhold_unreadable(store, request_access(request), loaded)
        bundle = events_bundle(
            spec,
            status=progress.status if progress else spec.status,
            events_since_start=progress.events_since_start if progress else 0,
            events=loaded,
            base_url=base_url(request),
            now=store.clock.now(),
            errors=_errors(progress),
            fhir_version=version,
        )
        return FhirResponse(bundle, media_type=fhir_media_type(version))

    return router


def owned_by(spec: SubscriptionSpec, principal: Principal) -> bool:
    """Whether `principal` may manage the Subscription: its owner, or an administrator."""
    return principal.admin or (spec.owner is not None and spec.owner.subject == principal.subject)


async def operation_parameters(request: Request, max_body_bytes: int) -> dict[str, list[str]]:
    """Query parameters, plus the `parameter`s of a POSTed Parameters resource."""
    found: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        found.setdefault(name, []).append(value)
    if request.method == "POST" and request.headers.get("content-length", "0") != "0":
        body = await read_json_body(request, max_body_bytes)
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise BadRequest("POST a Parameters resource, or use GET with query parameters")
        for parameter in body.get("parameter") or []:
            given = _primitive(parameter) if isinstance(parameter, dict) else None
            if given is not None:
                found.setdefault(str(parameter.get("name")), []).append(given)
    return found


def _primitive(parameter: dict[str, Any]) -> str | None:
    for key, value in parameter.items():
        if key.startswith("value") and isinstance(value, str | int):
            return str(value)
    return None


def _errors(progress: SubscriptionProgress | None) -> list[StatusError]:
    """The subscription's last error, with the kind of delivery failure it was, if any."""
    if progress is None or progress.last_error is None:
        return []
    return [StatusError(progress.last_error, progress.last_failure)]


def _number(params: dict[str, list[str]], name: str) -> int | None:
    values = params.get(name)
    if not values:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", values[-1]):
        raise BadRequest(f"{name} must be a whole number (an eventNumber), not {values[-1]!r}")
    return int(values[-1])


def _content(params: dict[str, list[str]]) -> ContentLevel | None:
    values = params.get("content")
    if not values:
        return None
    levels = get_args(ContentLevel)
    if values[-1] not in levels:
        raise BadRequest(f"content must be one of {', '.join(levels)}, not {values[-1]!r}")
    return values[-1]  # type: ignore[return-value]
