"""A subscription created, changed and deleted notifies about exactly the changes committed while
each of its states held, at the endpoint of that state: the process's registries (the matcher's
and the one the API and the dispatchers read) never mix one state with another."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.delivery.conftest import (
    QUICK_DELIVERY,
    notification_type,
    status_of,
    subscription,
    wait_for_status,
)
from tests.support.herald import running_herald
from tests.support.receiver import Receiver, http_receiver
from tests.support.waiting import eventually


def _about(endpoint: str, patient: str) -> dict[str, Any]:
    return subscription(endpoint, filters=(f"Observation?subject=Patient/{patient}",))


async def _observation(client: httpx.AsyncClient, patient: str) -> str:
    made = await client.post(
        "/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "heart rate"},
            "subject": {"reference": f"Patient/{patient}"},
        },
    )
    assert made.status_code == 201, made.text
    return f"Observation/{made.json()['id']}"


def _notified(receiver: Receiver, path: str) -> list[str]:
    """The focus (`Type/id`) of every event notified at `path`, in order."""
    return [
        "/".join(event["focus"]["reference"].split("/_history/")[0].split("/")[-2:])
        for request in receiver.requests
        if request.path.endswith(path) and notification_type(request.json) == "event-notification"
        for event in status_of(request.json)["notificationEvent"]
    ]


async def _heard(receiver: Receiver, counts: list[int]) -> None:
    """Until the events notified at /w, /a and /b number `counts`."""

    def heard() -> list[int]:
        return [len(_notified(receiver, path)) for path in ("/w", "/a", "/b")]

    async def done() -> bool:
        return heard() == counts

    await eventually(done, within=15.0, what=lambda: f"heard {heard()}, not {counts}")


async def test_a_subscription_notifies_per_its_state_when_each_change_was_committed(
    tmp_path: Path,
) -> None:
    first, then = f"p-{uuid.uuid4().hex[:8]}", f"p-{uuid.uuid4().hex[:8]}"
    url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    async with (
        http_receiver() as receiver,
        running_herald(url, scheduler=False, **QUICK_DELIVERY) as (_, client),
    ):
        # A witness on the second patient throughout: once it heard of a change, so would have
        # the subscription under test, had it matched.
        watching = await client.post("/Subscription", json=_about(f"{receiver.url}/w", then))
        witness = watching.json()["id"]
        made = await client.post("/Subscription", json=_about(f"{receiver.url}/a", first))
        assert made.status_code == 201, made.text
        subscription_id = made.json()["id"]
        await wait_for_status(client, witness, "active")
        await wait_for_status(client, subscription_id, "active")
        while_first = [await _observation(client, first), await _observation(client, then)]

        changed = {**_about(f"{receiver.url}/b", then), "id": subscription_id}
        answer = await client.put(f"/Subscription/{subscription_id}", json=changed)
        assert answer.status_code == 200, answer.text
        await wait_for_status(client, subscription_id, "active")
        while_then = [await _observation(client, first), await _observation(client, then)]
        # What was owed is delivered before the subscription goes (a deleted subscription is
        # owed nothing more).
        await _heard(receiver, [2, 1, 1])

        assert (await client.delete(f"/Subscription/{subscription_id}")).is_success
        after_delete = [await _observation(client, first), await _observation(client, then)]
        await _heard(receiver, [3, 1, 1])

    assert _notified(receiver, "/w") == [while_first[1], while_then[1], after_delete[1]]
    assert _notified(receiver, "/a") == [while_first[0]]
    assert _notified(receiver, "/b") == [while_then[1]]
