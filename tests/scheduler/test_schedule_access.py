"""`CarePlan/{id}/$schedule` with authentication on: it answers only to a token that may read
that CarePlan. Another patient's CarePlan is answered exactly as a missing one (404, nothing of
its report); a token that reads no CarePlans at all (only `openid`) is refused (403)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from fhirstore.clock import FrozenClock
from tests.scheduler.conftest import DAILY_0900, HeraldFactory, careplan, timing_activity
from tests.support.tokens import bearer, jwt_settings, token
from tests.support.waiting import eventually


def _bearer(clock: FrozenClock, **claims: Any) -> dict[str, str]:
    """A token valid at the scheduler tests' frozen time."""
    issued = int(clock.now().timestamp())
    return bearer(token(iat=issued, exp=issued + 3600, **claims))


async def _post(client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]) -> str:
    answer = await client.post(f"/{body['resourceType']}", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def test_schedule_answers_only_for_a_careplan_the_token_may_read(
    embedded_herald: HeraldFactory, clock: FrozenClock, tmp_path: Path
) -> None:
    admin = _bearer(clock, sub="admin-1")
    async with embedded_herald(**jwt_settings(tmp_path)) as (_, client):
        alice_id = await _post(client, {"resourceType": "Patient"}, admin)
        bob_id = await _post(client, {"resourceType": "Patient"}, admin)
        secret = "Bob's dialysis at the Northside clinic"
        bobs = await _post(
            client, careplan(bob_id, timing_activity(DAILY_0900, text=secret)), admin
        )
        alices = await _post(client, careplan(alice_id, timing_activity(DAILY_0900)), admin)

        async def reconciled() -> bool:
            answers = [
                await client.get(f"/CarePlan/{i}/$schedule", headers=admin) for i in (bobs, alices)
            ]
            return all(a.status_code == 200 for a in answers)

        await eventually(reconciled, within=30, what=lambda: "CarePlans not reconciled")

        alice = _bearer(clock, sub="alice", scope="launch/patient patient/CarePlan.rs",
                        patient=alice_id)  # fmt: skip
        own = await client.get(f"/CarePlan/{alices}/$schedule", headers=alice)
        assert own.status_code == 200, own.text
        assert own.json()["resourceType"] == "Parameters"

        missing_id = "0" * len(bobs)
        for method in ("GET", "POST"):
            hidden = await client.request(method, f"/CarePlan/{bobs}/$schedule", headers=alice)
            missing = await client.request(
                method, f"/CarePlan/{missing_id}/$schedule", headers=alice
            )
            assert hidden.status_code == missing.status_code == 404
            assert hidden.text.replace(bobs, missing_id) == missing.text
            assert secret not in hidden.text and "tasks" not in hidden.text

        openid = _bearer(clock, sub="mallory", scope="openid")
        for careplan_id in (bobs, alices):
            refused = await client.get(f"/CarePlan/{careplan_id}/$schedule", headers=openid)
            assert refused.status_code == 403
            assert "CarePlan.r" in refused.json()["issue"][0]["diagnostics"]
            assert secret not in refused.text
        nobody = await client.get(f"/CarePlan/{bobs}/$schedule")
        assert nobody.status_code == 401
        # Service still answers.
        assert (await client.get("/metadata")).status_code == 200
