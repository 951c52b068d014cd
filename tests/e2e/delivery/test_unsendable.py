"""No event is a poison pill for its subscription's delivery, in both shapes: a notification that
cannot be built or sent (an unexpected error, not a failed delivery) is tried a bounded number
of times, then its event becomes a dead letter with a reason an operator can act on, counted in
a metric, and the events after it still reach the REST hook receiver. A replay once the cause is
fixed delivers it; nothing is lost."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

import subscriptions.focus as focus
from channels.transport import Delivery, Outcome
from fhirstore import fhirjson
from fhirstore.store import StoredVersion
from herald.runtime import Runtime
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

QUICK_TRIES = {
    "quarantine_attempts": 2,
    "quarantine_initial_backoff_seconds": 0.05,
    "quarantine_max_backoff_seconds": 0.2,
}

# A valid FHIR decimal (the spec's regex allows an exponent), stored and read back as written.
# It used to be a real poison: Kafka consumers could not decode the change event carrying it,
# and a full-resource notification could not read the focus version (plain orjson).
HUGE = (
    b'{"resourceType":"Observation","status":"final","code":{"text":"huge"},'
    b'"subject":{"reference":"Patient/%s"},"valueQuantity":{"value":1e400}}'
)


def _observation(patient_id: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": f"Patient/{patient_id}"},
        "valueQuantity": {"value": 5},
    }


async def _full_resource_subscription(
    client: httpx.AsyncClient, receiver: Receiver, patient_id: str
) -> str:
    """An active subscription to this patient's Observations, with their full resources."""
    filters = (f"Observation?subject=Patient/{patient_id}",)
    return await subscribe(
        client, subscription(receiver.url, filters=filters, content="full-resource")
    )


def _unsendable(channel: str = "rest-hook") -> float:
    found = REGISTRY.get_sample_value("herald_events_unsendable_total", {"channel": channel})
    return found or 0.0


def _delivered(receiver: Receiver) -> list[int]:
    """Event numbers the receiver accepted, in arrival order."""
    return [
        n
        for r in receiver.requests
        if r.status == 200 and r.json and notification_type(r.json) == "event-notification"
        for n in event_numbers(r.json)
    ]


async def _wait_delivered(receiver: Receiver, numbers: set[int]) -> None:
    async def arrived() -> bool:
        return numbers <= set(_delivered(receiver))

    await eventually(
        arrived, within=30, what=lambda: f"wanted {numbers}, got {_delivered(receiver)}"
    )


async def test_a_focus_that_cannot_be_read_is_set_aside_and_later_events_arrive(
    start_herald: HeraldFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    before = _unsendable()
    async with http_receiver() as receiver, start_herald(**QUICK_TRIES) as (runtime, client):
        sid = await _full_resource_subscription(client, receiver, pid)
        _break_reading_of(monkeypatch, "unreadable")
        stored = await client.post("/Observation", json=_observation(pid, "unreadable"))
        assert stored.status_code == 201, stored.text
        poison_id = stored.json()["id"]
        for text in ("after-1", "after-2"):
            made = await client.post("/Observation", json=_observation(pid, text))
            assert made.status_code == 201, made.text

        await _wait_delivered(receiver, {2, 3})  # the subscription moved on
        [letter] = await runtime.ledger.dead_letters(sid)
        assert (letter.first_event, letter.last_event) == (1, 1)
        assert f"event 1 (Observation/{poison_id} version 1)" in letter.reason
        assert "could not be built or sent after 2 tries" in letter.reason
        assert "ValueError at" in letter.reason
        assert "simulated unreadable focus" in letter.reason  # the operator sees the error
        assert _unsendable() - before == 1
        await wait_for_status(client, sid, "active")  # the next delivery got through

        monkeypatch.undo()  # the fix is deployed; a replay delivers what was set aside
        assert await runtime.ledger.replay(letter.id, now=runtime.clock.now()) is not None
        await _wait_delivered(receiver, {1})

    [replayed] = [
        r for r in receiver.requests if r.status == 200 and r.json and 1 in event_numbers(r.json)
    ]
    assert poison_id.encode() in replayed.body and b'"unreadable"' in replayed.body
    assert sorted(set(_delivered(receiver))) == [1, 2, 3]  # nothing lost


def _break_reading_of(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Reading a focus version whose body holds `text` fails (a bug the builder meets),
    whether it is read from the store or taken from what the matcher passed on."""
    read = focus._resource
    recall = focus.RecentVersions.get

    def broken(version: StoredVersion | None) -> dict[str, Any] | None:
        if version is not None and version.body is not None and text in version.body:
            raise ValueError("simulated unreadable focus")
        return read(version)

    def broken_recall(recent: focus.RecentVersions, key: focus.FocusKey) -> dict[str, Any] | None:
        found = recall(recent, key)
        if found is not None and text in fhirjson.dumps(found).decode():
            raise ValueError("simulated unreadable focus")
        return found

    monkeypatch.setattr(focus, "_resource", broken)
    monkeypatch.setattr(focus.RecentVersions, "get", broken_recall)


async def test_a_decimal_beyond_a_double_reaches_full_resource_subscribers_as_written(
    start_herald: HeraldFactory,
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    async with http_receiver() as receiver, start_herald(**QUICK_TRIES) as (runtime, client):
        sid = await _full_resource_subscription(client, receiver, pid)
        stored = await client.post("/Observation", content=HUGE % pid.encode())
        assert stored.status_code == 201, stored.text
        made = await client.post("/Observation", json=_observation(pid, "after"))
        assert made.status_code == 201, made.text
        await _wait_delivered(receiver, {1, 2})
        assert await runtime.ledger.dead_letters(sid) == []
        fetched = await client.get(
            f"/Subscription/{sid}/$events", params={"content": "full-resource"}
        )
        assert fetched.status_code == 200, fetched.text  # was 500
        assert b'"value":1E+400' in fetched.content

    [first] = [
        r for r in receiver.requests if r.status == 200 and r.json and 1 in event_numbers(r.json)
    ]
    assert b'"value":1E+400' in first.body  # the resource as stored, in full


async def test_a_transport_that_raises_on_one_event_does_not_stop_the_subscription(
    start_herald: HeraldFactory,
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    async with http_receiver() as receiver, start_herald(**QUICK_TRIES) as (runtime, client):
        sid = await subscribe(
            client, subscription(receiver.url, filters=(f"Observation?subject=Patient/{pid}",))
        )
        _raise_on(runtime, "Observation/bad-")
        await client.put(f"/Observation/bad-{pid}", json=_observation(pid, "bad"))
        await wait_for_status(client, sid, "error")
        error = (await client.get(f"/Subscription/{sid}")).json()["error"]
        assert "RuntimeError at" in error, error
        assert "simulated" not in error  # the error's own text stays in the dead letter
        await client.post("/Observation", json=_observation(pid, "good"))
        await _wait_delivered(receiver, {2})
        [letter] = await runtime.ledger.dead_letters(sid)
        assert "simulated transport bug" in letter.reason
        await wait_for_status(client, sid, "active")


def _raise_on(runtime: Runtime, focus_prefix: str) -> None:
    """A transport bug that only notifications about this focus meet."""
    transport = runtime.transports["rest-hook"]
    send = transport.send

    async def buggy(delivery: Delivery) -> Outcome:
        if delivery.body is not None and focus_prefix.encode() in delivery.body:
            raise RuntimeError("simulated transport bug")
        return await send(delivery)

    transport.send = buggy  # type: ignore[method-assign]
