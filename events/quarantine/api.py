"""The quarantine for administrators: `[base]/$quarantine` and `[base]/$quarantine-replay`.

- `GET [base]/$quarantine` lists what consumer groups set aside and not yet resolved, oldest
  first, as a Parameters resource with one `message` per record (`?status=all` includes the
  resolved ones; `?consumer=herald-matcher` narrows to one group);
- `POST [base]/$quarantine-replay?id=N` (or a Parameters body with `id`) asks for record N's
  message to be fed to its group again; a process running that group replays it within
  `HERALD_QUARANTINE_REPLAY_SECONDS` and marks it resolved if it goes through.

Only administrators (HERALD_ADMIN_SCOPE, or anyone while authentication is off) may use them:
anyone else gets 403, as for the audit trail. The records never show the message's content.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from events.quarantine.records import Quarantine, QuarantinedMessage
from fhirstore import BadRequest, Forbidden, InvalidSearch, NotFound
from fhirstore.api import (
    FhirResponse,
    boundary_router,
    read_json_body,
    request_principal,
    whole_number,
)
from fhirstore.db import fhir_instant

_STATUSES = ("open", "all")


def quarantine_router(quarantine: Quarantine, *, prefix: str, max_body_bytes: int) -> APIRouter:
    """The two operations: include before the generic `/{type}` routes."""
    router = boundary_router(prefix)

    @router.get("/$quarantine")
    async def listing(request: Request) -> Response:
        _require_admin(request)
        params = dict(request.query_params)
        for name in params:
            if name not in ("status", "consumer"):
                raise InvalidSearch(f"$quarantine takes status and consumer, not {name!r}")
        status = params.get("status", "open")
        if status not in _STATUSES:
            raise InvalidSearch(f"status is open (the default) or all, not {status!r}")
        records = await quarantine.records(
            include_resolved=status == "all", group=params.get("consumer")
        )
        return FhirResponse(
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "count", "valueInteger": len(records)},
                    *({"name": "message", "part": parts(r)} for r in records),
                ],
            }
        )

    @router.post("/$quarantine-replay")
    async def replay(request: Request) -> Response:
        _require_admin(request)
        record_id = await _id(request, max_body_bytes)
        requested = await quarantine.request_replay(record_id)
        if requested is None:
            if await quarantine.record(record_id) is not None:
                raise BadRequest(
                    f"quarantined message {record_id} is resolved already: a replay went through"
                )
            raise NotFound(f"no quarantined message {record_id}; GET [base]/$quarantine lists them")
        return FhirResponse({"resourceType": "Parameters", "parameter": parts(requested)})

    return router


def parts(record: QuarantinedMessage) -> list[dict[str, Any]]:
    """A record as Parameters parts (never the message's content)."""
    found: list[dict[str, Any]] = [
        {"name": "id", "valueInteger": record.id},
        {"name": "status", "valueCode": record.status},
        {"name": "consumer", "valueString": record.consumer_group},
        {"name": "topic", "valueString": record.topic},
        {"name": "key", "valueString": record.key},
    ]
    if record.event_id is not None:
        found.append({"name": "eventId", "valueString": record.event_id})
    if record.version_id is not None:
        found.append({"name": "versionId", "valueString": record.version_id})
    if record.sequence is not None:
        found.append({"name": "sequence", "valueString": str(record.sequence)})
    found += [
        {"name": "errorClass", "valueString": record.error_class},
        {"name": "reason", "valueString": record.reason},
        {"name": "attempts", "valueInteger": record.attempts},
        {"name": "recorded", "valueInstant": fhir_instant(record.recorded_at)},
    ]
    if record.replay_requested_at is not None:
        found.append(
            {"name": "replayRequested", "valueInstant": fhir_instant(record.replay_requested_at)}
        )
    if record.resolved_at is not None:
        found.append({"name": "resolved", "valueInstant": fhir_instant(record.resolved_at)})
    return found


def _require_admin(request: Request) -> None:
    if not request_principal(request).admin:
        raise Forbidden(
            "the quarantine of the change stream is for administrators: this needs a token with "
            "the administrator scope (HERALD_ADMIN_SCOPE, herald/admin unless configured "
            "otherwise)"
        )


async def _id(request: Request, max_body_bytes: int) -> int:
    """The record id, from `?id=` or a Parameters body's `id` (valueInteger or valueString)."""
    given = request.query_params.get("id")
    if given is None and request.headers.get("content-length", "0") != "0":
        body = await read_json_body(request, max_body_bytes)
        for parameter in (body or {}).get("parameter", []) if isinstance(body, dict) else []:
            if isinstance(parameter, dict) and parameter.get("name") == "id":
                value = parameter.get("valueInteger", parameter.get("valueString"))
                given = str(value) if value is not None else None
    if given is None:
        raise BadRequest(
            "$quarantine-replay needs the id of the quarantined message (?id=N, or a "
            "Parameters body with an `id`); GET [base]/$quarantine lists them"
        )
    return whole_number(given, "id")
