"""A receiver that refuses for good (HTTP 400, 403) against one that says "not now" (503): the
status codes the failure at once, refusals are retried at the slowest pace only, and a receiver
fixed afterwards still gets every pending event, in order."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from fhirstore.wire import DELIVERY_FAILURE_SYSTEM, SUBSCRIPTION_ERROR_SYSTEM
from tests.e2e.delivery.conftest import (
    HeraldFactory,
    event_numbers,
    notification_type,
    subscribe,
    subscription,
    wait_for_status,
)
from tests.support.receiver import Receiver, http_receiver
from tests.support.waiting import eventually

# A refusal waits between half of this and all of it before it is tried again; a "not now"
# starts at 0.05 s and doubles. The gap is wide, so the test does not depend on the machine.
_SLOWEST = 8.0


def _patient(pid: str, n: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": f"19{50 + n}-01-01"}


def _failed_tries(receiver: Receiver) -> int:
    return sum(
        1
        for r in receiver.requests
        if r.status != 200 and r.json and notification_type(r.json) == "event-notification"
    )


async def _coded_error(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    answer = await client.get(f"/Subscription/{sid}/$status")
    assert answer.status_code == 200, answer.text
    [entry] = answer.json()["entry"]
    status = entry["resource"]
    assert status["status"] == "error"
    [error] = status["error"]
    return {
        "codes": {c["system"]: c["code"] for c in error.get("coding", [])},
        "text": error["text"],
    }


async def test_refusing_receivers_show_error_at_once_are_retried_slowly_and_lose_nothing(
    start_herald: HeraldFactory,
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    filters = (f"Patient?_id={pid}",)
    async with (
        http_receiver() as bad_request,
        http_receiver() as forbidden,
        http_receiver() as unavailable,
        start_herald(delivery_max_backoff_seconds=_SLOWEST) as (_, client),
    ):
        receivers = {400: bad_request, 403: forbidden, 503: unavailable}
        ids = {
            code: await subscribe(client, subscription(r.url, filters=filters))
            for code, r in receivers.items()
        }
        for code, receiver in receivers.items():
            receiver.respond_with(code)
        for n in range(3):
            await client.put(f"/Patient/{pid}", json=_patient(pid, n))
        for sid in ids.values():
            await wait_for_status(client, sid, "error")

        async def retried_often() -> bool:
            return _failed_tries(unavailable) >= 5

        await eventually(retried_often, within=20, what=lambda: "503 was not retried quickly")
        # Meanwhile each refusal was tried once, or twice on a machine so loaded that the 503's
        # five tries took over _SLOWEST / 2: a refusal's every next try waits that long at least.
        assert 1 <= _failed_tries(bad_request) <= 2
        assert 1 <= _failed_tries(forbidden) <= 2

        coded = {code: await _coded_error(client, sid) for code, sid in ids.items()}
        for code in (400, 403):
            assert coded[code]["codes"] == {
                SUBSCRIPTION_ERROR_SYSTEM: "error-response",
                DELIVERY_FAILURE_SYSTEM: "rejected",
            }
            assert str(code) in coded[code]["text"]
        assert coded[503]["codes"] == {
            SUBSCRIPTION_ERROR_SYSTEM: "error-response",
            DELIVERY_FAILURE_SYSTEM: "unavailable",
        }
        resource = (await client.get(f"/Subscription/{ids[403]}")).json()
        assert "403" in resource["error"]  # the resource's own `error` stays text (R4B: string)

        for receiver in receivers.values():  # the receivers are fixed
            receiver.reset()
        for sid in ids.values():
            await wait_for_status(client, sid, "active", within=3 * _SLOWEST)
        for receiver in receivers.values():
            await _accepted_through(receiver, 3)
        after = (await client.get(f"/Subscription/{ids[403]}/$status")).json()
        assert "error" not in after["entry"][0]["resource"]

    for receiver in receivers.values():
        accepted = [
            n
            for r in receiver.requests
            if r.status == 200 and notification_type(r.json) == "event-notification"
            for n in event_numbers(r.json)
        ]
        assert accepted == [1, 2, 3]  # every pending event, in order, none lost


async def _accepted_through(receiver: Receiver, last: int) -> None:
    async def accepted() -> bool:
        return any(
            r.status == 200 and last in event_numbers(r.json)
            for r in receiver.requests
            if r.json and notification_type(r.json) == "event-notification"
        )

    await eventually(accepted, within=3 * _SLOWEST, what=lambda: f"event {last} not accepted")
