"""When receivers fail: nothing is lost, order holds, status tells the truth, others go on."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from tests.e2e.delivery.conftest import (
    HeraldFactory,
    event_numbers,
    notification_type,
    subscribe,
    subscription,
    subscription_status,
    wait_for_status,
)
from tests.support.receiver import Receiver, http_receiver
from tests.support.waiting import eventually


def _patient(pid: str, n: int) -> dict:
    return {"resourceType": "Patient", "id": pid, "birthDate": f"19{50 + n}-01-01"}


async def test_receiver_failing_then_recovering_gets_everything_in_order(
    start_herald: HeraldFactory,
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    async with http_receiver() as receiver, start_herald() as (_, client):
        sid = await subscribe(client, subscription(receiver.url, filters=(f"Patient?_id={pid}",)))
        receiver.respond_with(500)
        for n in range(5):
            await client.put(f"/Patient/{pid}", json=_patient(pid, n))
        await wait_for_status(client, sid, "error")
        failed_attempts = len(receiver.requests)
        receiver.reset()  # answers 200 again
        await wait_for_status(client, sid, "active")
        for n in range(5, 8):
            await client.put(f"/Patient/{pid}", json=_patient(pid, n))
        await _delivered_through(receiver, 8)

    accepted = [r for r in receiver.requests if r.status == 200]
    numbers = [
        n
        for r in accepted
        if notification_type(r.json) != "handshake"
        for n in event_numbers(r.json)
    ]
    assert numbers == list(range(1, 9))  # all of them, in order, no gaps, none twice
    assert failed_attempts > 1  # it retried while the receiver failed
    keys = {r.headers["idempotency-key"] for r in receiver.requests if r.status != 200}
    retried_numbers = {
        n for r in receiver.requests if r.status != 200 for n in event_numbers(r.json)
    }
    assert retried_numbers == {1}  # while event 1 failed, event 2 was never sent ahead of it
    assert keys == {f"{sid}:1"}  # every retry carried the same idempotency key


async def test_receiver_that_never_answers_does_not_hold_up_others(
    start_herald: HeraldFactory,
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    async with (
        http_receiver() as stuck,
        http_receiver() as healthy,
        start_herald() as (_, client),
    ):
        filters = (f"Patient?_id={pid}",)
        stuck_id = (
            await client.post(
                "/Subscription", json=subscription(stuck.url, filters=filters, timeout=1)
            )
        ).json()["id"]
        healthy_id = (
            await client.post("/Subscription", json=subscription(healthy.url, filters=filters))
        ).json()["id"]
        await wait_for_status(client, stuck_id, "active")
        await wait_for_status(client, healthy_id, "active")
        stuck.hang()
        for n in range(3):
            await client.put(f"/Patient/{pid}", json=_patient(pid, n))
        await _delivered_through(healthy, 3)
        await wait_for_status(client, stuck_id, "error")
        assert await subscription_status(client, healthy_id) == "active"
        error = (await client.get(f"/Subscription/{stuck_id}")).json().get("error", "")
        assert "1 s" in error or "timed out" in error or "no answer" in error, error


async def test_events_fetches_what_a_down_receiver_missed(start_herald: HeraldFactory) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    async with http_receiver() as receiver, start_herald() as (_, client):
        sid = await subscribe(
            client, subscription(receiver.url, filters=(f"Patient?_id={pid}",), content="empty")
        )
        receiver.respond_with(503)
        for n in range(4):
            await client.put(f"/Patient/{pid}", json=_patient(pid, n))
        await wait_for_status(client, sid, "error")

        statuses: list[dict] = []

        async def all_four_numbered() -> bool:
            answer = await client.get(f"/Subscription/{sid}/$status")
            assert answer.status_code == 200, answer.text
            [entry] = answer.json()["entry"]
            statuses.append(entry["resource"])
            return int(statuses[-1]["eventsSinceSubscriptionStart"]) == 4

        await eventually(all_four_numbered, within=15, what=lambda: f"$status: {statuses[-1]}")
        assert statuses[-1]["status"] == "error"

        missed = await client.get(
            f"/Subscription/{sid}/$events",
            params={"eventsSinceNumber": "2", "content": "full-resource"},
        )
        assert missed.status_code == 200, missed.text

    bundle = missed.json()
    assert notification_type(bundle) == "query-event"
    assert event_numbers(bundle) == [2, 3, 4]
    births = [e["resource"]["birthDate"] for e in bundle["entry"][1:] if "resource" in e]
    assert births == ["1951-01-01", "1952-01-01", "1953-01-01"]


async def _delivered_through(receiver: Receiver, last: int, within: float = 30.0) -> None:
    """Wait until the receiver accepted (2xx) a notification carrying event `last`."""

    async def accepted() -> bool:
        return any(
            r.status == 200 and last in event_numbers(r.json)
            for r in receiver.requests
            if r.json and notification_type(r.json) == "event-notification"
        )

    await eventually(accepted, within=within, what=lambda: f"event {last} never accepted")


async def test_events_past_the_give_up_age_become_dead_letters_and_can_be_replayed(
    start_herald: HeraldFactory,
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    async with (
        http_receiver() as receiver,
        start_herald(delivery_give_up_hours=1 / 3600) as (runtime, client),
    ):
        sid = await subscribe(client, subscription(receiver.url, filters=(f"Patient?_id={pid}",)))
        receiver.respond_with(500)
        await client.put(f"/Patient/{pid}", json=_patient(pid, 0))

        async def given_up() -> bool:
            return bool(await runtime.ledger.dead_letters(sid))

        await eventually(given_up, within=20, what=lambda: "event 1 was never given up")
        [letter] = await runtime.ledger.dead_letters(sid)
        assert (letter.first_event, letter.last_event) == (1, 1)
        assert "HTTP 500" in letter.reason

        receiver.reset()
        await client.put(f"/Patient/{pid}", json=_patient(pid, 1))
        await _delivered_through(receiver, 2)

        async def recorded() -> bool:  # the receiver answers before Herald records it
            progress = await runtime.ledger.progress(sid)
            return progress is not None and progress.delivered_through >= 2

        await eventually(recorded, within=10, what=lambda: "delivery of event 2 never recorded")
        # Retention passes: delivered event 2 is pruned, dead-lettered event 1 is kept.
        assert await runtime.ledger.prune(runtime.clock.now() + timedelta(days=1)) == 1
        assert await runtime.ledger.replay(letter.id, now=runtime.clock.now()) is not None
        await _delivered_through(receiver, 1)
        assert await runtime.ledger.replay(letter.id, now=runtime.clock.now()) is None
        await client.put(f"/Patient/{pid}", json=_patient(pid, 2))
        await _delivered_through(receiver, 3)
        await asyncio.sleep(0.5)  # a delivery stuck on the gap would repeat event 3 meanwhile

    accepted = [
        n
        for r in receiver.requests
        if r.status == 200 and notification_type(r.json) == "event-notification"
        for n in event_numbers(r.json)
    ]
    assert accepted[0] == 2 and 1 in accepted  # 2 went on without 1; 1 came with the replay
    assert accepted.count(3) == 1


async def test_events_waiting_on_a_failing_handshake_are_given_up_in_time(
    start_herald: HeraldFactory,
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    async with (
        http_receiver() as receiver,
        start_herald(delivery_give_up_hours=1 / 3600) as (runtime, client),
    ):
        receiver.respond_with(500)  # not even the handshake gets through
        sid = (
            await client.post(
                "/Subscription", json=subscription(receiver.url, filters=(f"Patient?_id={pid}",))
            )
        ).json()["id"]
        await wait_for_status(client, sid, "error")
        await client.put(f"/Patient/{pid}", json=_patient(pid, 0))

        async def given_up() -> bool:
            return bool(await runtime.ledger.dead_letters(sid))

        await eventually(given_up, within=20, what=lambda: "event 1 was never given up")
        [letter] = await runtime.ledger.dead_letters(sid)
        assert (letter.first_event, letter.last_event) == (1, 1)
        assert "handshake" in letter.reason and "HTTP 500" in letter.reason

        receiver.reset()  # the endpoint comes back: the handshake gets through at last
        await wait_for_status(client, sid, "active")
