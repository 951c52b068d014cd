"""`PlanDefinition/{id}/$apply`, `PlanDefinition/$apply` and the status of asynchronous
enrolments (docs/enrolment.md).

Synchronous: the CarePlan the plan makes for one Patient, not stored (R4B: the operation
returns the resource; the client stores it, or enrols through the asynchronous form). The
PlanDefinition, its ActivityDefinitions and the Patient are read with the caller's access: what
it may not read answers 404, as a read does.

Asynchronous (`Prefer: respond-async`, instance level): `subject` may be a Patient search; each
matched Patient gets a stored CarePlan, idempotently. It needs the right to create CarePlans
(403 without it); the answer is 202 with the status URL in Content-Location, which answers 202
with X-Progress while it runs, 200 with a Parameters summary when done, and DELETE cancels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhirstore import BadRequest, Store, operation_outcome
from fhirstore.api import (
    FhirResponse,
    boundary_router,
    read_json_body,
    request_access,
    request_principal,
)
from fhirstore.db import fhir_instant
from fhirstore.validation import require_id, validate_resource
from scheduler.enrolment.actions import Note
from scheduler.enrolment.apply import Options, apply_plan, subject_of
from scheduler.enrolment.definitions import read_definitions
from scheduler.enrolment.jobs import Job, Jobs
from scheduler.enrolment.population import Population, Summary
from scheduler.enrolment.timing import Unresolved, enrolment_start
from scheduler.policy import SchedulePolicy

STATUS_PATH = "/$enrolment"
# The R4B parameters Herald reads; `start` is Herald's own (the enrolment start).
READ = ("subject", "encounter", "practitioner", "organization", "start", "planDefinition")
# The R4B parameters Herald accepts and does not use (reported in the CarePlan).
UNUSED = ("userType", "userLanguage", "userTaskContext", "setting", "settingContext")
_VALUES = ("valueString", "valueReference", "valueDateTime", "valueDate", "valueUri", "valueCode")


def enrolment_router(
    store: Store,
    policy: SchedulePolicy,
    *,
    prefix: str,
    public_base: str | None = None,
    max_body_bytes: int = 1 << 20,
) -> APIRouter:
    router = boundary_router(prefix)
    population = Population(store, policy)
    jobs = Jobs(store.clock)  # this process's (scheduler/enrolment/jobs.py)

    def status_url(request: Request, job: Job) -> str:
        base = public_base or str(request.base_url).rstrip("/") + prefix
        return f"{base}{STATUS_PATH}/{job.id}"

    async def parameters(request: Request) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for name, value in request.query_params.multi_items():
            found.setdefault(name, []).append(value)
        if request.method == "POST" and _has_body(request):
            body = await read_json_body(request, max_body_bytes)
            for name, value in _body_parameters(body):
                found.setdefault(name, []).append(value)
        unknown = sorted(set(found) - set(READ) - set(UNUSED))
        if unknown:
            raise BadRequest(
                f"$apply has no parameter {unknown[0]!r}; it takes {', '.join(READ)}",
                expression=[unknown[0]],
            )
        return found

    async def answer(
        request: Request,
        given: Mapping[str, list[Any]],
        plan: Mapping[str, Any],
        plan_id: str | None,
    ) -> Response:
        subject = _one(given, "subject", required=True)
        assert subject is not None
        patient_id = subject.removeprefix("Patient/")
        if not subject.startswith("Patient/") or "?" in subject:
            raise BadRequest(
                "subject must be one Patient (Patient/{id}); to enrol the patients a search"
                " matches, send the search as subject with Prefer: respond-async",
                expression=["subject"],
            )
        require_id(patient_id)
        access = request_access(request)
        patient = await store.read("Patient", patient_id, access=access)
        assert patient.body is not None
        who = subject_of(orjson.loads(patient.body), policy.default_zone)
        now = store.clock.now()
        try:
            start = enrolment_start(_one(given, "start"), who.zone, now)
        except Unresolved as error:
            raise BadRequest(error.reason, expression=["start"]) from None
        definitions = await read_definitions(store, plan, access)
        options = Options(start, now, tag=policy.tag, **_people(given))
        unused = [
            Note(f"$apply.{name}", f"the {name} parameter is accepted and not used")
            for name in UNUSED
            if name in given
        ]
        applied = apply_plan(plan, plan_id, definitions, who, options, unused)
        return FhirResponse(applied.careplan)

    @router.api_route("/PlanDefinition/{plan_id}/$apply", methods=["GET", "POST"])
    async def apply_instance(request: Request, plan_id: str) -> Response:
        require_id(plan_id)
        given = await parameters(request)
        if "respond-async" in request.headers.get("prefer", ""):
            return await enrol(request, given, plan_id)
        stored = await store.read("PlanDefinition", plan_id, access=request_access(request))
        assert stored.body is not None
        return await answer(request, given, orjson.loads(stored.body), plan_id)

    @router.post("/PlanDefinition/$apply")
    async def apply_type(request: Request) -> Response:
        if "respond-async" in request.headers.get("prefer", ""):
            raise BadRequest(
                "an asynchronous enrolment applies a stored PlanDefinition: store it, then"
                " POST PlanDefinition/{id}/$apply"
            )
        given = await parameters(request)
        plan = given.get("planDefinition") or [None]
        if len(plan) != 1 or not isinstance(plan[0], Mapping):
            raise BadRequest(
                "PlanDefinition/$apply needs one planDefinition parameter holding the"
                " PlanDefinition (as resource); or apply a stored one at"
                " PlanDefinition/{id}/$apply",
                expression=["planDefinition"],
            )
        body = validate_resource("PlanDefinition", plan[0])
        return await answer(request, given, body, None)  # not stored: no enrolment identifier

    async def enrol(request: Request, given: Mapping[str, list[Any]], plan_id: str) -> Response:
        subject = _one(given, "subject", required=True)
        assert subject is not None
        prepared = await population.prepare(
            plan_id,
            subject,
            start=_one(given, "start"),
            access=request_access(request),
            **_people(given),
        )

        async def work(summary: Summary) -> None:
            await population.run(prepared, summary=summary)

        job = jobs.start(request_principal(request), plan_id, work)
        accepted = operation_outcome(
            f"enrolment in PlanDefinition/{plan_id} started; ask {status_url(request, job)}"
            " for its progress",
            code="informational",
            severity="information",
        )
        location = {"Content-Location": status_url(request, job)}
        return FhirResponse(accepted, status_code=202, headers=location)

    @router.get(STATUS_PATH + "/{job_id}")
    async def status(request: Request, job_id: str) -> Response:
        job = jobs.get(job_id, request_principal(request))
        summary = job.summary
        if job.finished is None:
            done = summary.done
            progress = (
                f"{done} of {summary.matched} patients"
                if summary.matched is not None
                else "reading the patients the search matches"
            )
            return Response(status_code=202, headers={"X-Progress": progress, "Retry-After": "1"})
        return FhirResponse(_summary(job))

    @router.delete(STATUS_PATH + "/{job_id}")
    async def cancel(request: Request, job_id: str) -> Response:
        jobs.cancel(job_id, request_principal(request))
        cancelled = operation_outcome(
            f"enrolment job {job_id} cancelled; the patients enrolled so far stay enrolled",
            code="informational",
            severity="information",
        )
        return FhirResponse(cancelled, status_code=202)

    return router


def _has_body(request: Request) -> bool:
    """Whether a POST sends a body (the parameters may all be in the query instead)."""
    length = request.headers.get("content-length")
    return length not in (None, "0") or "transfer-encoding" in request.headers


def _body_parameters(body: Any) -> list[tuple[str, Any]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("the body of $apply must be a Parameters resource")
    found: list[tuple[str, Any]] = []
    for parameter in body.get("parameter") or ():
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if not isinstance(name, str):
            raise BadRequest("each parameter of $apply needs a name")
        if "resource" in parameter:
            found.append((name, parameter["resource"]))
            continue
        value = next((parameter[k] for k in _VALUES if k in parameter), None)
        if isinstance(value, dict):  # a Reference
            value = value.get("reference")
        found.append((name, value))
    return found


def _one(given: Mapping[str, list[Any]], name: str, *, required: bool = False) -> str | None:
    values = given.get(name) or []
    if len(values) > 1:
        raise BadRequest(
            f"give {name} once (Herald applies a plan to one subject, or to a Patient search"
            " with Prefer: respond-async)",
            expression=[name],
        )
    if not values or values[0] in (None, ""):
        if required:
            raise BadRequest(f"$apply needs the {name} parameter", expression=[name])
        return None
    if not isinstance(values[0], str):
        raise BadRequest(f"{name} must be a string or a Reference", expression=[name])
    return values[0]


def _people(given: Mapping[str, list[Any]]) -> dict[str, str | None]:
    return {name: _one(given, name) for name in ("encounter", "practitioner", "organization")}


def _summary(job: Job) -> dict[str, Any]:
    summary = job.summary
    parameters: list[dict[str, Any]] = [
        {
            "name": "planDefinition",
            "valueReference": {"reference": f"PlanDefinition/{job.plan_id}"},
        },
        {"name": "started", "valueInstant": fhir_instant(job.started)},
        {"name": "matched", "valueInteger": summary.matched or 0},
        {"name": "enrolled", "valueInteger": summary.enrolled},
        {"name": "alreadyEnrolled", "valueInteger": summary.already},
        {"name": "failed", "valueInteger": summary.failed},
    ]
    if job.finished is not None:
        parameters.insert(2, {"name": "finished", "valueInstant": fhir_instant(job.finished)})
    if job.error is not None:
        parameters.append({"name": "stopped", "valueString": job.error})
    for failure in summary.failures:
        part = [
            {"name": "patient", "valueReference": {"reference": failure.patient}},
            {"name": "reason", "valueString": failure.reason},
        ]
        parameters.append({"name": "failure", "part": part})
    for note in summary.notes:
        part = [
            {"name": "where", "valueString": note.where},
            {"name": "reason", "valueString": note.text},
        ]
        parameters.append({"name": "notApplied", "part": part})
    return {"resourceType": "Parameters", "parameter": parameters}
