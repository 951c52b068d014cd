"""What a WebSocket client of Herald receives, for the independent checks: the
`$get-ws-binding-token` answer, the handshake after `bind-with-token`, and an event
notification (id-only), read by a real `websockets` client from a Herald served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.conformance.structure import notification_type
from tests.e2e.delivery.conftest import subscription
from tests.support.waiting import eventually

WAIT_S = 20.0


class WebSocketListener:
    """A bound socket and what came over it so far, by output name."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.outputs: dict[str, dict[str, Any]] = {}

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            return dict(json.loads(await self.socket.recv()))

    async def event_notification(self) -> None:
        """Wait for the next event notification (heartbeats are skipped) and keep it."""
        while True:
            message = await self.receive()
            if notification_type(message) == "event-notification":
                self.outputs["ws-event-id-only"] = message
                return


async def websocket_subscription(
    client: httpx.AsyncClient, pid: str, mime: str, *, max_count: int | None = None
) -> str:
    """A WebSocket subscription (id-only, changes of Patient `pid`), not bound yet: its id."""
    body = subscription("", filters=(f"Patient?_id={pid}",), content="id-only", max_count=max_count)
    body["channel"] = {**body["channel"], "type": "websocket", "payload": mime}
    body["channel"].pop("endpoint")
    made = await client.post("/Subscription", json=body)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


@asynccontextmanager
async def websocket_listener(
    client: httpx.AsyncClient, pid: str, mime: str, subscription_id: str | None = None
) -> AsyncIterator[WebSocketListener]:
    """A socket bound to `subscription_id` (by default a new `websocket_subscription`), whose
    handshake has arrived."""
    sid = subscription_id or await websocket_subscription(client, pid, mime)
    answer = await client.get(f"/Subscription/{sid}/$get-ws-binding-token")
    assert answer.status_code == 200, answer.text
    values = {p["name"]: _value(p) for p in answer.json()["parameter"]}
    async with connect(values["websocket-url"]) as socket:
        listener = WebSocketListener(socket)
        listener.outputs["ws-binding-token"] = answer.json()
        await socket.send(f"bind-with-token {values['token']}")
        listener.outputs["ws-handshake"] = await listener.receive()
        yield listener


async def batched_notification(
    client: httpx.AsyncClient, pid: str, mime: str, subscription_id: str
) -> dict[str, Any]:
    """The first notification of a subscription with `maxCount` 2 that had two events owed
    before its socket was bound: one notification carrying both (two changes of `pid`)."""

    async def owed() -> bool:
        answer = await client.get(f"/Subscription/{subscription_id}/$status")
        return _events_since_start(answer.json()["entry"][0]["resource"]) == "2"

    await eventually(owed, within=WAIT_S, what=lambda: "the two events were never owed")
    async with websocket_listener(client, pid, mime, subscription_id) as listener:
        while True:
            message = await listener.receive()
            if notification_type(message) == "event-notification":
                return message


def _events_since_start(status: dict[str, Any]) -> str | None:
    """`eventsSinceSubscriptionStart` of a status in either version's form."""
    if status["resourceType"] == "Parameters":
        found = [p for p in status["parameter"] if p["name"] == "events-since-subscription-start"]
        return str(found[0]["valueString"]) if found else None
    return status.get("eventsSinceSubscriptionStart")


def _value(parameter: dict[str, Any]) -> Any:
    return next(v for k, v in parameter.items() if k.startswith("value"))
