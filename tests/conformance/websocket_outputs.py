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


@asynccontextmanager
async def websocket_listener(
    client: httpx.AsyncClient, pid: str, mime: str
) -> AsyncIterator[WebSocketListener]:
    """A WebSocket subscription (id-only, changes of Patient `pid`), bound to a socket whose
    handshake has arrived."""
    body = subscription("", filters=(f"Patient?_id={pid}",), content="id-only")
    body["channel"] = {**body["channel"], "type": "websocket", "payload": mime}
    body["channel"].pop("endpoint")
    made = await client.post("/Subscription", json=body)
    assert made.status_code == 201, made.text
    answer = await client.get(f"/Subscription/{made.json()['id']}/$get-ws-binding-token")
    assert answer.status_code == 200, answer.text
    values = {p["name"]: _value(p) for p in answer.json()["parameter"]}
    async with connect(values["websocket-url"]) as socket:
        listener = WebSocketListener(socket)
        listener.outputs["ws-binding-token"] = answer.json()
        await socket.send(f"bind-with-token {values['token']}")
        listener.outputs["ws-handshake"] = await listener.receive()
        yield listener


def _value(parameter: dict[str, Any]) -> Any:
    return next(v for k, v in parameter.items() if k.startswith("value"))
