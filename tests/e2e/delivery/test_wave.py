"""Many subscriptions woken at once (a wave of changes, one for each): every subscription
gets its notifications once and in order, and those whose receiver fails retry and recover
while the others are delivered."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import httpx
import pytest

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

SUBSCRIPTIONS = 40  # one patient each; every fourth one's receiver fails at first


def _wave(patients: list[str], n: int) -> dict[str, Any]:
    """One transaction changing every patient: one event for each one's subscription."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": p, "birthDate": f"19{50 + n}-01-01"},
                "request": {"method": "PUT", "url": f"Patient/{p}"},
            }
            for p in patients
        ],
    }


def _accepted(receiver: Receiver) -> dict[str, list[int]]:
    """Event numbers each subscription's notifications carried that the receiver took."""
    numbers: dict[str, list[int]] = defaultdict(list)
    for r in receiver.requests:
        if r.status == 200 and notification_type(r.json) == "event-notification":
            numbers[r.headers["idempotency-key"].split(":")[0]] += event_numbers(r.json)
    return numbers


async def _all_delivered(receiver: Receiver, ids: list[str], wanted: list[int]) -> None:
    async def done() -> bool:
        got = _accepted(receiver)
        return all(got.get(i) == wanted for i in ids)

    await eventually(
        done, within=30.0, what=lambda: f"delivered {dict(_accepted(receiver))}, not {wanted}"
    )


async def _no_worker_busy(client: httpx.AsyncClient) -> None:
    """Until no subscription is being delivered (the handshakes' workers stopped lingering),
    so that the wave finds every subscription idle, as at 08:00."""

    async def idle() -> bool:
        metrics = (await client.get("http://herald.test/metrics")).text
        return "herald_delivery_workers 0.0" in metrics.splitlines()

    await eventually(idle, within=15.0, what=lambda: "delivery workers stayed busy")


async def test_many_subscriptions_woken_at_once_each_get_theirs_once_and_in_order(
    start_herald: HeraldFactory,
) -> None:
    tag = uuid.uuid4().hex[:8]
    patients = [f"w{tag}-{n}" for n in range(SUBSCRIPTIONS)]
    async with (
        http_receiver() as healthy,
        http_receiver() as failing,
        start_herald() as (_, client),
    ):
        ids: dict[str, list[str]] = {"healthy": [], "failing": []}
        for n, p in enumerate(patients):
            which = "failing" if n % 4 == 0 else "healthy"
            url = (failing if which == "failing" else healthy).url
            made = await client.post(
                "/Subscription", json=subscription(url, filters=(f"Patient?_id={p}",))
            )
            assert made.status_code == 201, made.text
            ids[which].append(str(made.json()["id"]))
        for sid in ids["healthy"] + ids["failing"]:
            await wait_for_status(client, sid, "active")
        await _no_worker_busy(client)
        failing.respond_with(500)
        for n in range(2):
            answer = await client.post("", json=_wave(patients, n))
            assert answer.status_code == 200, answer.text
        # The healthy receiver gets everything while the other one still fails.
        await _all_delivered(healthy, ids["healthy"], [1, 2])
        for sid in ids["failing"]:
            await wait_for_status(client, sid, "error")
        failing.reset()
        await _all_delivered(failing, ids["failing"], [1, 2])
        for sid in ids["failing"]:
            await wait_for_status(client, sid, "active")

    # Once each, in order, each to its own subscription's endpoint.
    assert _accepted(healthy) == {sid: [1, 2] for sid in ids["healthy"]}
    assert _accepted(failing) == {sid: [1, 2] for sid in ids["failing"]}
    # While event 1 failed, event 2 was never sent ahead of it, and every retry carried the
    # same idempotency key.
    refused = [r for r in failing.requests if r.status != 200]
    assert refused
    assert {r.headers["idempotency-key"] for r in refused} <= {f"{s}:1" for s in ids["failing"]}


async def test_a_subscription_woken_again_for_what_its_round_delivers_gets_no_worker(
    start_herald: HeraldFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a wave, the sweep reads the subscriptions owing events, and a round may take one of
    them before the sweep goes through its list; or the sweep finds the event first, and the
    change's own job wakes the subscription while a round delivers it. Here every sweep's
    read is that stale one (it reports the subscription as owing all along), the job's wake
    comes while the receiver takes half a second over the notification, and: the round
    delivers it, and no worker of its own is started for it (`herald_delivery_workers` stays
    0)."""
    pid = f"s{uuid.uuid4().hex[:8]}"
    async with http_receiver() as receiver, start_herald() as (runtime, client):
        sid = await subscribe(client, subscription(receiver.url, filters=(f"Patient?_id={pid}",)))
        await _no_worker_busy(client)
        ledger = runtime.ledger

        async def stale_owing(owner: str, *, now: Any, limit: int = 1000) -> list[Any]:
            return list((await ledger.progress_of([sid])).values())

        monkeypatch.setattr(ledger, "owing", stale_owing)
        receiver.slow(0.5)
        workers: list[float] = []

        async def delivered() -> bool:
            metrics = (await client.get("http://herald.test/metrics")).text
            for line in metrics.splitlines():
                if line.startswith("herald_delivery_workers "):
                    workers.append(float(line.split()[1]))
            return _accepted(receiver).get(sid) == [1] and len(workers) > 10

        before = len(receiver.requests)
        answer = await client.post("", json=_wave([pid], 0))
        assert answer.status_code == 200, answer.text
        await receiver.wait_for(before + 1)
        runtime.dispatcher.wake(sid)  # the job, late
        await eventually(delivered, within=30.0, what=lambda: f"{dict(_accepted(receiver))}")

    assert _accepted(receiver) == {sid: [1]}
    assert max(workers) == 0
