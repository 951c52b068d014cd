"""The WebSocket channel's transport: a notification goes to the subscription's bound sockets,
here or (over the bus) in the replica that holds them. With no socket bound anywhere it is a
failure, so the delivery core keeps the events, retries (a bind cuts the wait short) and the
subscription says `error` until a client binds again; `$events` returns them meanwhile."""

from __future__ import annotations

import time

from channels.transport import Delivery, Failure, Outcome
from channels.websocket.hub import SocketHub


class WebSocketTransport:
    def __init__(self, hub: SocketHub) -> None:
        self._hub = hub

    async def send(self, delivery: Delivery) -> Outcome:
        started = time.monotonic()
        text = (delivery.body or b"").decode()
        sid = delivery.subscription_id
        before = delivery.greeted_before
        if await self._hub.push(sid, text, greeted_before=before):
            return Outcome(True, None, None, time.monotonic() - started)
        if await self._hub.bound_elsewhere(sid):
            try:
                await self._hub.forward(sid, text, greeted_before=before)
            except Exception as error:
                problem = f"could not forward to the replica holding its WebSocket: {error}"
                elapsed = time.monotonic() - started
                return Outcome(False, None, problem, elapsed, Failure.UNAVAILABLE)
            return Outcome(True, None, None, time.monotonic() - started)
        problem = (
            f"no WebSocket is bound to Subscription/{sid}: the client gets a token from "
            "$get-ws-binding-token and sends 'bind-with-token <token>' on the websocket-url; "
            "events are kept meanwhile ($events)"
        )
        return Outcome(False, None, problem, time.monotonic() - started, Failure.UNREACHABLE)

    async def aclose(self) -> None:
        return None
