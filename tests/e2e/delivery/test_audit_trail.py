"""Deliveries in the audit trail, in both shapes: every attempt a receiver saw, failed or not,
is one AuditEvent with the events it carried, in the order they were sent."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.e2e.delivery.conftest import (
    HeraldFactory,
    event_numbers,
    subscribe,
    subscription,
    wait_for_status,
)
from tests.support.receiver import Request, http_receiver
from tests.support.waiting import eventually


async def _attempts(client: httpx.AsyncClient, subscription_id: str) -> list[dict[str, Any]]:
    """The delivery AuditEvents of the subscription, oldest first."""
    answer = await client.get(f"/AuditEvent?type=110106&entity=Subscription/{subscription_id}")
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in reversed(answer.json().get("entry", []))]


def _as_sent(request: Request) -> tuple[str, str | None]:
    """(AuditEvent outcome, eventNumbers) of what the receiver saw."""
    numbers = [str(n) for n in event_numbers(request.json)]
    carried = "-".join(dict.fromkeys([numbers[0], numbers[-1]])) if numbers else None
    return ("0" if request.status == 200 else "4"), carried


def _as_recorded(event: dict[str, Any]) -> tuple[str, str | None]:
    details = event["entity"][0].get("detail", [])
    return event["outcome"], next((d["valueString"] for d in details), None)


async def test_every_delivery_attempt_is_in_the_trail(start_herald: HeraldFactory) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    async with http_receiver() as receiver, start_herald() as (_, client):
        sid = await subscribe(client, subscription(receiver.url, filters=(f"Patient?_id={pid}",)))
        receiver.respond_with(500)
        await client.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid})
        await receiver.wait_for(3)  # the handshake and two failed attempts
        receiver.reset()
        await wait_for_status(client, sid, "active")
        await client.put(
            f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "other"}
        )
        await receiver.wait_for(len(receiver.requests) + 1)
        seen: list[dict[str, Any]] = []

        async def all_recorded() -> bool:
            seen[:] = await _attempts(client, sid)
            return len(seen) == len(receiver.requests)

        await eventually(
            all_recorded, within=10, what=lambda: f"{len(seen)} of {len(receiver.requests)}"
        )

    assert [_as_recorded(e) for e in seen] == [_as_sent(r) for r in receiver.requests]
    assert [e["subtype"][1]["code"] for e in seen][:2] == ["handshake", "event-notification"]
    assert {e["outcomeDesc"] for e in seen if e["outcome"] == "4"} == {"failed: HTTP 500"}
