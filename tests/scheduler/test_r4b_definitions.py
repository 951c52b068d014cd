"""The official R4B PlanDefinition and ActivityDefinition examples: each is applied, or what of it
is not applied is reported with a reason; none makes `$apply` fail.

Every example is stored as it is; each PlanDefinition is applied to a patient, and each
ActivityDefinition through a one-action plan that names it. The CarePlan each answer holds is
then stored: Herald accepts it, or refuses it with a reason as it would any CarePlan (e.g. one
whose schedules would make too many Tasks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.scheduler.conftest import HeraldFactory, create, patient


def _examples(package: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(package.glob(f"{kind}-*.json"))]


def _wrapping(definition: dict[str, Any]) -> dict[str, Any]:
    """A one-action PlanDefinition applying `definition` (contained when it has no url)."""
    body: dict[str, Any] = {
        "resourceType": "PlanDefinition",
        "id": f"wraps-{definition['id']}",
        "url": f"http://example.org/PlanDefinition/wraps-{definition['id']}",
        "status": "active",
    }
    if "url" in definition:
        canonical = definition["url"]
    else:
        body["contained"] = [definition]
        canonical = f"#{definition['id']}"
    body["action"] = [{"id": "only", "definitionCanonical": canonical}]
    return body


def _reasons(careplan: dict[str, Any]) -> list[str]:
    reports = [c for c in careplan.get("contained", []) if c["resourceType"] == "OperationOutcome"]
    return [i["diagnostics"] for r in reports for i in r["issue"]]


async def test_each_example_definition_is_applied_or_reported(
    embedded_herald: HeraldFactory, r4b_examples: Path
) -> None:
    plans = _examples(r4b_examples, "PlanDefinition")
    definitions = _examples(r4b_examples, "ActivityDefinition")
    assert len(plans) >= 10 and len(definitions) >= 5, "the package's examples are missing"
    async with embedded_herald() as (_, client):
        patient_id = (await create(client, {**patient(), "birthDate": "1970-06-01"}))["id"]
        for example in [*plans, *definitions, *(_wrapping(d) for d in definitions)]:
            stored = await client.put(f"/{example['resourceType']}/{example['id']}", json=example)
            assert stored.status_code in (200, 201), stored.text

        outcomes: dict[str, str] = {}
        applied = [p["id"] for p in plans] + [_wrapping(d)["id"] for d in definitions]
        for plan_id in applied:
            answer = await client.get(
                f"/PlanDefinition/{plan_id}/$apply", params={"subject": f"Patient/{patient_id}"}
            )
            assert answer.status_code == 200, f"{plan_id}: {answer.text}"
            careplan = answer.json()
            activities, reasons = careplan.get("activity", []), _reasons(careplan)
            assert activities or reasons, f"PlanDefinition/{plan_id}: no activity and no reason"
            assert all(r.strip() for r in reasons)
            saved = await client.post("/CarePlan", json=careplan)
            if saved.status_code != 201:  # refused as any CarePlan would be, with the reason
                assert saved.status_code == 422, f"{plan_id}: {saved.text}"
                reasons.append("not stored: " + saved.json()["issue"][0]["diagnostics"])
            outcomes[plan_id] = f"{len(activities)} activities; " + "; ".join(reasons)
        print("\n".join(f"{k}: {v}" for k, v in outcomes.items()))
        # Most examples are conditional decision support (left out, with the reason); the
        # order sets and protocols make activities.
        assert sum(1 for v in outcomes.values() if not v.startswith("0 activities")) >= 5
