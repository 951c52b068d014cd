"""The WebSocket channel end to end: a real `websockets` client binds with a token from
`$get-ws-binding-token` to a Herald served on 127.0.0.1 and receives the handshake, event
notifications and heartbeats. Each test runs embedded and scaled out (PostgreSQL, Kafka)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from channels.websocket.api import MAX_FRAME_BYTES, MAX_MESSAGE_CHARS
from tests.e2e.delivery.conftest import (
    HeraldFactory,
    event_numbers,
    notification_type,
    status_of,
    subscription,
    wait_for_status,
)
from tests.support.waiting import eventually

WAIT_S = 20.0


def websocket_subscription(patient: str, **options: Any) -> dict[str, Any]:
    resource = subscription("", filters=(f"Observation?subject=Patient/{patient}",), **options)
    resource["channel"] = {**resource["channel"], "type": "websocket"}
    resource["channel"].pop("endpoint")
    return resource


def observation(patient: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": f"reading {n}"},
        "subject": {"reference": f"Patient/{patient}"},
    }


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    made = await client.post("/Subscription", json=resource)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def token_for(client: httpx.AsyncClient, *ids: str) -> dict[str, Any]:
    if len(ids) == 1:
        answer = await client.get(f"/Subscription/{ids[0]}/$get-ws-binding-token")
    else:
        answer = await client.get("/Subscription/$get-ws-binding-token", params={"id": ids})
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = {}
    for parameter in answer.json()["parameter"]:
        value = next(v for k, v in parameter.items() if k.startswith("value"))
        found.setdefault(parameter["name"], []).append(value)
    return found


async def receive(socket: ClientConnection, within: float = WAIT_S) -> dict[str, Any]:
    async with asyncio.timeout(within):
        return dict(json.loads(await socket.recv()))


async def receive_notifications(
    socket: ClientConnection, count: int, within: float = WAIT_S
) -> list[dict[str, Any]]:
    """The next `count` event notifications (heartbeats in between are skipped)."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        message = await receive(socket, within)
        if message["resourceType"] == "Bundle" and notification_type(message) == (
            "event-notification"
        ):
            found.append(message)
    return found


async def bind(socket: ClientConnection, token: dict[str, Any]) -> list[dict[str, Any]]:
    """Send bind-with-token; the handshakes that come back, one per subscription."""
    await socket.send(f"bind-with-token {token['token'][0]}")
    return [await receive(socket) for _ in token["subscription"]]


def _patient() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"


async def test_bound_socket_gets_handshake_then_notifications_in_order(
    start_herald: HeraldFactory,
) -> None:
    patient = _patient()
    async with start_herald(served=True) as (_, client):
        sid = await create(client, websocket_subscription(patient))
        assert (await client.get(f"/Subscription/{sid}")).json()["status"] == "requested"
        token = await token_for(client, sid)
        assert token["subscription"] == [sid]
        assert token["websocket-url"][0].startswith("ws://127.0.0.1:")
        async with connect(token["websocket-url"][0]) as socket:
            [handshake] = await bind(socket, token)
            await wait_for_status(client, sid, "active")
            for n in range(1, 4):
                assert (await client.post("/Observation", json=observation(patient, n))).is_success
            notifications = await receive_notifications(socket, 3)

    assert notification_type(handshake) == "handshake"
    assert status_of(handshake)["subscription"]["reference"].endswith(f"Subscription/{sid}")
    assert [event_numbers(n) for n in notifications] == [[1], [2], [3]]


async def test_two_subscriptions_share_one_socket(start_herald: HeraldFactory) -> None:
    first, second = _patient(), _patient()
    async with start_herald(served=True) as (_, client):
        sids = [await create(client, websocket_subscription(p)) for p in (first, second)]
        token = await token_for(client, *sids)
        async with connect(token["websocket-url"][0]) as socket:
            handshakes = await bind(socket, token)
            for patient in (first, second):
                await client.post("/Observation", json=observation(patient, 1))
            notifications = await receive_notifications(socket, 2)

    def subscription_of(bundle: dict[str, Any]) -> str:
        return str(status_of(bundle)["subscription"]["reference"]).rsplit("/", 1)[-1]

    assert sorted(map(subscription_of, handshakes)) == sorted(sids)
    assert sorted(map(subscription_of, notifications)) == sorted(sids)


async def test_bad_tokens_and_commands_get_an_error_and_the_socket_stays_usable(
    start_herald: HeraldFactory,
) -> None:
    async with start_herald(served=True, websocket_token_seconds=1) as (_, client):
        sid = await create(client, websocket_subscription(_patient()))
        stale = await token_for(client, sid)
        await asyncio.sleep(1.2)  # the token expires
        doomed = await create(client, websocket_subscription(_patient()))
        for_deleted = await token_for(client, doomed)
        assert (await client.delete(f"/Subscription/{doomed}")).is_success
        async with connect(stale["websocket-url"][0]) as socket:
            await socket.send("bind-with-token not-a-token")
            unknown = await receive(socket)
            await socket.send(f"bind-with-token {stale['token'][0]}")
            expired = await receive(socket)
            await socket.send("subscribe-me-please")
            nonsense = await receive(socket)
            await socket.send(b"\x00\x01binary")
            binary = await receive(socket)
            [deleted] = await bind(socket, for_deleted)
            [handshake] = await bind(socket, await token_for(client, sid))  # a fresh token

    for outcome in (unknown, expired, nonsense, binary, deleted):
        assert outcome["resourceType"] == "OperationOutcome"
    # A deleted Subscription looks like a token that never existed.
    assert deleted["issue"][0]["diagnostics"] == unknown["issue"][0]["diagnostics"]
    assert "expired" in expired["issue"][0]["diagnostics"]
    assert "bind-with-token" in nonsense["issue"][0]["diagnostics"]
    assert notification_type(handshake) == "handshake"


async def test_heartbeats_reach_the_socket(start_herald: HeraldFactory) -> None:
    async with start_herald(served=True) as (_, client):
        sid = await create(client, websocket_subscription(_patient(), heartbeat=1))
        token = await token_for(client, sid)
        async with connect(token["websocket-url"][0]) as socket:
            await bind(socket, token)
            heartbeat = await receive(socket, within=10)  # one handshake per bind, no more

    assert notification_type(heartbeat) == "heartbeat"
    assert status_of(heartbeat)["status"] == "active"


async def test_a_dropped_socket_catches_up_with_events_and_gets_the_rest_on_rebind(
    start_herald: HeraldFactory,
) -> None:
    patient = _patient()
    # Retries wait 30-60 s: the events must come because the bind cut that wait short.
    slow_retries = {"delivery_initial_backoff_seconds": 60, "delivery_max_backoff_seconds": 60}
    async with start_herald(served=True, **slow_retries) as (_, client):
        sid = await create(client, websocket_subscription(patient))
        token = await token_for(client, sid)
        async with connect(token["websocket-url"][0]) as socket:
            await bind(socket, token)
            await client.post("/Observation", json=observation(patient, 1))
            [first] = await receive_notifications(socket, 1)
        # No socket now: the next events are kept and the subscription says it cannot deliver.
        for n in (2, 3):
            await client.post("/Observation", json=observation(patient, n))
        await wait_for_status(client, sid, "error")
        missed = await client.get(f"/Subscription/{sid}/$events", params={"eventsSinceNumber": 2})
        async with connect(token["websocket-url"][0]) as socket:
            [handshake] = await bind(socket, await token_for(client, sid))
            pushed = await receive_notifications(socket, 2, within=10)
        await wait_for_status(client, sid, "active")

    assert event_numbers(first) == [1]
    assert missed.status_code == 200
    assert event_numbers(missed.json()) == [2, 3]
    assert status_of(handshake)["eventsSinceSubscriptionStart"] == "3"
    assert [event_numbers(n) for n in pushed] == [[2], [3]]


async def test_binding_tokens_are_only_for_websocket_subscriptions(
    start_herald: HeraldFactory,
) -> None:
    async with start_herald(served=True) as (_, client):
        hook = await create(
            client, subscription("http://127.0.0.1:9/hook", filters=("Patient?_id=x",))
        )
        not_websocket = await client.get(f"/Subscription/{hook}/$get-ws-binding-token")
        unknown = await client.get("/Subscription/nope/$get-ws-binding-token")
        no_ids = await client.get("/Subscription/$get-ws-binding-token")

    assert not_websocket.status_code == 422
    assert "websocket" in not_websocket.json()["issue"][0]["diagnostics"]
    assert unknown.status_code == 404
    assert no_ids.status_code == 400


async def test_a_changed_subscription_keeps_its_bound_socket(start_herald: HeraldFactory) -> None:
    patient = _patient()
    async with start_herald(served=True) as (_, client):
        sid = await create(client, websocket_subscription(patient))
        token = await token_for(client, sid)
        async with connect(token["websocket-url"][0]) as socket:
            await bind(socket, token)
            await wait_for_status(client, sid, "active")
            changed = {**websocket_subscription(patient), "id": sid, "reason": "changed"}
            assert (await client.put(f"/Subscription/{sid}", json=changed)).is_success
            again = await receive(socket)  # a new handshake over the same socket
            await wait_for_status(client, sid, "active")
            await client.post("/Observation", json=observation(patient, 1))
            [notification] = await receive_notifications(socket, 1)

    assert notification_type(again) == "handshake"
    assert event_numbers(notification) == [1]


async def test_oversized_messages_are_refused_and_the_server_stays_up(
    start_herald: HeraldFactory,
) -> None:
    async with start_herald(served=True) as (_, client):
        sid = await create(client, websocket_subscription(_patient()))
        token = await token_for(client, sid)
        url = token["websocket-url"][0]
        async with connect(url) as socket:
            await socket.send("bind-with-token " + "x" * (MAX_MESSAGE_CHARS + 1))
            too_long = await receive(socket)
            [handshake] = await bind(socket, token)  # still usable
        async with connect(url, max_size=None) as socket:
            await socket.send("x" * (MAX_FRAME_BYTES + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await socket.recv()
        async with connect(url) as socket:  # the server still takes new sockets
            [again] = await bind(socket, await token_for(client, sid))

    assert str(MAX_MESSAGE_CHARS) in too_long["issue"][0]["diagnostics"]
    assert notification_type(handshake) == notification_type(again) == "handshake"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big


async def test_the_bind_handshake_and_each_notification_are_in_the_audit_trail(
    start_herald: HeraldFactory,
) -> None:
    patient = _patient()
    async with start_herald(served=True) as (_, client):
        sid = await create(client, websocket_subscription(patient))
        token = await token_for(client, sid)
        async with connect(token["websocket-url"][0]) as socket:
            await bind(socket, token)
            await wait_for_status(client, sid, "active")
            assert (await client.post("/Observation", json=observation(patient, 1))).is_success
            # The bind's handshake was the only one: a delivery step racing the bind must
            # not greet the socket again (the next frame is the notification).
            after_bind = await receive(socket)
        recorded: list[tuple[str, str]] = []

        async def both_recorded() -> bool:
            answer = await client.get(f"/AuditEvent?type=110106&entity=Subscription/{sid}")
            recorded[:] = [
                (event["subtype"][0]["code"], event["subtype"][1]["code"])
                for event in (e["resource"] for e in reversed(answer.json().get("entry", [])))
            ]
            return len(recorded) >= 2

        await eventually(both_recorded, within=WAIT_S, what=lambda: f"recorded: {recorded}")
    assert notification_type(after_bind) == "event-notification"
    assert recorded == [("websocket", "handshake"), ("websocket", "event-notification")]
