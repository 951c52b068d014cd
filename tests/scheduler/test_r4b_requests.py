"""The official R4B example requests a CarePlan activity may refer to (MedicationRequest,
ServiceRequest, DeviceRequest, CommunicationRequest, Appointment): each is scheduled or
reported with a reason, and none makes the scheduler fail.

Each is stored as it is, with a CarePlan for its own patient referring to it (most are
completed, or for a patient that is not stored: their rules speak). Then once more as an active
order (a booked Appointment) for a stored patient, without `dispenseRequest.validityPeriod`
(the examples' prescriptions ran out in 2015 or 2016; their dosage timings are what should meet
the Timing engine), with a CarePlan referring to it. After a sweep every CarePlan has Tasks or a
reason in `$schedule`; one the planner failed on would have no `$schedule` at all.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.scheduler.conftest import HeraldFactory, create, patient, tasks_of

TYPES = (
    "MedicationRequest",
    "ServiceRequest",
    "DeviceRequest",
    "CommunicationRequest",
    "Appointment",
)
# The active copies with Tasks on 2026-03-20 as Herald 2026-12 plans them: 22 MedicationRequests
# (dosage timings that run without end) and ServiceRequest/benchpress (occurrenceTiming); the
# rest are reported (taken as needed, a Timing.code alone, no occurrence, dates in the past).
SCHEDULED_AT_LEAST = 20


async def test_each_example_request_is_scheduled_or_reported(
    embedded_herald: HeraldFactory, r4b_examples: Path
) -> None:
    examples = _examples(r4b_examples)
    assert len(examples) >= 60, "the package should hold the official request examples"
    async with embedded_herald() as (runtime, client):
        pid = (await create(client, patient()))["id"]
        active_plans: dict[str, str] = {}  # CarePlan id -> the request's type
        targets: dict[str, str] = {}  # CarePlan id -> the request it refers to
        for example in examples:
            for body, subject in (
                (example, _own_patient(example) or f"Patient/{pid}"),
                (_activated(example, pid), f"Patient/{pid}"),
            ):
                kind = body["resourceType"]
                stored = await client.put(f"/{kind}/{body['id']}", json=body)
                assert stored.status_code in (200, 201), stored.text
                plan_id = f"{kind}-{body['id']}"
                plan = _careplan(plan_id, subject, f"{kind}/{body['id']}")
                response = await client.put(f"/CarePlan/{plan_id}", json=plan)
                assert response.status_code in (200, 201), response.text
                targets[plan_id] = f"{kind}/{body['id']}"
                if body is not example:
                    active_plans[plan_id] = kind
        await runtime.scheduler.sweep()

        outcomes: dict[str, str] = {}
        scheduled: list[str] = []
        for plan_id, target in targets.items():
            report = await client.get(f"/CarePlan/{plan_id}/$schedule")
            assert report.status_code == 200, f"CarePlan/{plan_id}: {report.text}"
            reasons = [
                p["valueString"]
                for s in report.json()["parameter"]
                if s["name"] == "skipped"
                for p in s["part"]
                if p["name"] == "reason"
            ]
            tasks = await tasks_of(client, plan_id)
            assert tasks or reasons, f"CarePlan/{plan_id}: no Tasks and no reason"
            assert all(r.strip() for r in reasons)
            assert all(t["focus"] == {"reference": target} for t in tasks)
            if tasks and plan_id in active_plans:
                scheduled.append(plan_id)
            outcomes[plan_id] = f"{len(tasks)} Tasks; " + "; ".join(reasons)
        print("\n".join(f"{k}: {v}" for k, v in outcomes.items()))
        assert len(scheduled) >= SCHEDULED_AT_LEAST, scheduled
        assert "ServiceRequest" in {active_plans[i] for i in scheduled}


def _examples(package: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for t in TYPES for p in sorted(package.glob(f"{t}-*.json"))]


def _own_patient(request: dict[str, Any]) -> str | None:
    """The `Patient/{id}` the example is for, when it names one."""
    if request["resourceType"] == "Appointment":
        actors = [p.get("actor", {}).get("reference", "") for p in request.get("participant", [])]
    else:
        actors = [request.get("subject", {}).get("reference", "")]
    found = [a[a.index("Patient/") :] for a in actors if "Patient/" in a]
    return found[0] if found else None


def _activated(example: dict[str, Any], pid: str) -> dict[str, Any]:
    """The example as an active order (a booked Appointment) for Patient/{pid}."""
    body = copy.deepcopy(example)
    body["id"] = f"{example['id']}-active"
    me = {"reference": f"Patient/{pid}"}
    if body["resourceType"] == "Appointment":
        body["status"] = "booked"
        others = [p for p in body["participant"] if "Patient/" not in str(p.get("actor"))]
        body["participant"] = [{"actor": me, "status": "accepted"}, *others]
        return body
    body["status"] = "active"
    body["subject"] = me
    if body["resourceType"] != "CommunicationRequest":  # it has no intent in R4B
        body["intent"] = "order"
    (body.get("dispenseRequest") or {}).pop("validityPeriod", None)
    return body


def _careplan(plan_id: str, subject: str, target: str) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "id": plan_id,
        "status": "active",
        "intent": "plan",
        "subject": {"reference": subject},
        "period": {"start": "2026-03-20"},
        "activity": [{"reference": {"reference": target}}],
    }
