"""Many subscriptions registered at once (a transaction Bundle of them): each gets one
handshake and becomes `active`, one whose endpoint fails shows `error` while the others go
on, and no event notification overtakes a subscription's handshake."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from typing import Any

import httpx

from tests.e2e.delivery.conftest import (
    HeraldFactory,
    notification_type,
    subscription,
    wait_for_status,
)
from tests.support.receiver import Receiver, http_receiver

HEALTHY = 60
FAILING = 4


def _transaction(resources: list[dict[str, Any]], method: str = "POST") -> dict[str, Any]:
    def request(resource: dict[str, Any]) -> dict[str, str]:
        if method == "PUT":
            return {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        return {"method": "POST", "url": resource["resourceType"]}

    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": r, "request": request(r)} for r in resources],
    }


async def _register(client: httpx.AsyncClient, resources: list[dict[str, Any]]) -> list[str]:
    """POST the Subscriptions in one transaction Bundle; their ids, in order."""
    answer = await client.post("", json=_transaction(resources))
    assert answer.status_code == 200, answer.text
    return [entry["response"]["location"].split("/")[1] for entry in answer.json()["entry"]]


def _kinds(receiver: Receiver) -> dict[str, list[str]]:
    """The kinds of notification each subscription's endpoint got, in order."""
    kinds: dict[str, list[str]] = defaultdict(list)
    for r in receiver.requests:
        kinds[r.headers["idempotency-key"].split(":")[0]].append(notification_type(r.json))
    return kinds


def _handshakes_taken(receiver: Receiver) -> Counter[str]:
    return Counter(
        r.headers["idempotency-key"].split(":")[0]
        for r in receiver.requests
        if r.status == 200 and notification_type(r.json) == "handshake"
    )


async def test_subscriptions_registered_together_each_get_one_handshake(
    start_herald: HeraldFactory,
) -> None:
    async with (
        http_receiver() as healthy,
        http_receiver() as failing,
        start_herald() as (_, client),
    ):
        failing.respond_with(503)
        filters = ("Patient?_id=nobody",)
        resources = [subscription(healthy.url, filters=filters) for _ in range(HEALTHY)]
        resources += [subscription(failing.url, filters=filters) for _ in range(FAILING)]
        ids = await _register(client, resources)
        good, bad = ids[:HEALTHY], ids[HEALTHY:]
        for sid in good:
            await wait_for_status(client, sid, "active")
        for sid in bad:
            await wait_for_status(client, sid, "error")
        error = (await client.get(f"/Subscription/{bad[0]}")).json()["error"]
        assert "503" in str(error)
        failing.reset()  # the endpoint mends: the handshake is retried and gets through
        for sid in bad:
            await wait_for_status(client, sid, "active")

    assert _handshakes_taken(healthy) == dict.fromkeys(good, 1)
    assert _kinds(healthy) == {sid: ["handshake"] for sid in good}
    assert _handshakes_taken(failing) == dict.fromkeys(bad, 1)


async def test_events_matched_before_the_handshake_come_after_it(
    start_herald: HeraldFactory,
) -> None:
    tag = uuid.uuid4().hex[:8]
    patients = [f"a{tag}-{n}" for n in range(HEALTHY)]
    async with http_receiver() as receiver, start_herald() as (_, client):
        resources = [subscription(receiver.url, filters=(f"Patient?_id={p}",)) for p in patients]
        ids = await _register(client, resources)
        # At once, before the handshakes went out: each subscription owes an event.
        changes = [
            {"resourceType": "Patient", "id": p, "birthDate": "1970-01-01"} for p in patients
        ]
        answer = await client.post("", json=_transaction(changes, method="PUT"))
        assert answer.status_code == 200, answer.text
        for sid in ids:
            await wait_for_status(client, sid, "active")
        await receiver.wait_for(2 * HEALTHY, timeout=30)

    assert _kinds(receiver) == {sid: ["handshake", "event-notification"] for sid in ids}
