"""The official R4B example CarePlans: each is materialised or reported with a reason.

They are stored as they are (most are completed or drafts) and once more made `active` plans
(so that their activities' real schedules meet the Timing engine). After a sweep, every CarePlan
either has Tasks or its `$schedule` says why not, for the whole CarePlan or per activity; no
CarePlan makes the scheduler fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.scheduler.conftest import HeraldFactory, tasks_of


async def test_each_example_careplan_is_materialised_or_reported(
    embedded_herald: HeraldFactory, r4b_examples: Path
) -> None:
    examples = _examples(r4b_examples)
    assert len(examples) >= 10, "the package should hold the official CarePlan examples"
    async with embedded_herald() as (runtime, client):
        ids: list[str] = []
        for example in examples:
            for body in (example, _activated(example)):
                response = await client.put(f"/CarePlan/{body['id']}", json=body)
                assert response.status_code in (200, 201), response.text
                ids.append(body["id"])
        await runtime.scheduler.sweep()

        outcomes: dict[str, str] = {}
        for careplan_id in ids:
            report = await client.get(f"/CarePlan/{careplan_id}/$schedule")
            assert report.status_code == 200, report.text
            params = report.json()["parameter"]
            tasks = await tasks_of(client, careplan_id)
            reasons = [
                p["valueString"]
                for s in params
                if s["name"] == "skipped"
                for p in s["part"]
                if p["name"] == "reason"
            ]
            assert tasks or reasons, f"CarePlan/{careplan_id}: no Tasks and no reason"
            assert all(r.strip() for r in reasons)
            outcomes[careplan_id] = f"{len(tasks)} Tasks; " + "; ".join(reasons)
        print("\n".join(f"{k}: {v}" for k, v in outcomes.items()))
        assert any(not v.startswith("0 Tasks") for v in outcomes.values())


def _examples(package: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(package.glob("CarePlan-*.json"))]


def _activated(example: dict[str, Any]) -> dict[str, Any]:
    """The example as an active plan whose activities are all still to do."""
    body = json.loads(json.dumps(example))
    body["id"] = f"{example['id']}-active"
    body.update(status="active", intent="plan")
    for activity in body.get("activity", []):
        if isinstance(activity.get("detail"), dict):
            activity["detail"]["status"] = "scheduled"
    return body
