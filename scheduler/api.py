"""`CarePlan/{id}/$schedule`: what the scheduler made of a CarePlan, as a Parameters resource.

It answers from the scheduler's last reconciliation of the CarePlan: whether it is scheduled,
how many Tasks its schedule wanted in the horizon then, and each activity (or the whole CarePlan)
left out with the reason, e.g. a `scheduledString` that cannot be materialised.

It tells what a read of the CarePlan would (activity ids, free text), so it answers only to a
token that may read that CarePlan, decided by the same code as the read: another patient's
CarePlan is 404, as a missing one; no scope that reads CarePlans at all is 403.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhirstore import Gone, NotFound, Store
from fhirstore.api import FhirResponse, boundary_router, request_access
from fhirstore.db import fhir_instant
from fhirstore.validation import require_id
from scheduler.bookkeeping import plan_rows


def schedule_router(store: Store, *, prefix: str) -> APIRouter:
    router = boundary_router(prefix)

    @router.api_route("/CarePlan/{careplan_id}/$schedule", methods=["GET", "POST"])
    async def schedule(request: Request, careplan_id: str) -> Response:
        require_id(careplan_id)
        # 404 as for a read, by the caller's token (out of reach is 404 too). A deleted one
        # the caller may see still has its report ("the CarePlan was deleted").
        try:
            await store.read("CarePlan", careplan_id, access=request_access(request))
            deleted = None
        except Gone as gone:
            deleted = gone
        async with store.engine.connect() as conn:
            row = (await plan_rows(conn, [careplan_id])).get(careplan_id)
        if row is None:
            if deleted is not None:
                raise deleted
            raise NotFound(
                f"the scheduler has not reconciled CarePlan/{careplan_id} yet; ask again in a "
                f"moment (or run `herald scheduler reconcile`)"
            )
        report = orjson.loads(row.report)
        parameters: list[dict[str, Any]] = [
            {"name": "scheduled", "valueBoolean": row.scheduled},
            {"name": "tasks", "valueInteger": report["tasks"]},
            {"name": "reconciled", "valueInstant": fhir_instant(row.reconciled_at)},
        ]
        if row.version_id is not None:
            parameters.append({"name": "careplanVersion", "valueId": str(row.version_id)})
        for skipped in report["skipped"]:
            part = [{"name": "reason", "valueString": skipped["reason"]}]
            if skipped["activity"] is not None:
                part.insert(0, {"name": "activity", "valueString": skipped["activity"]})
            parameters.append({"name": "skipped", "part": part})
        return FhirResponse({"resourceType": "Parameters", "parameter": parameters})

    return router
