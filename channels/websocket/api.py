"""The WebSocket channel's HTTP side: `Subscription/$get-ws-binding-token` (type and instance
level) and the socket endpoint clients connect to (its URL is the token's `websocket-url`).

On the socket a client sends `bind-with-token <token>`; for each subscription the token names,
Herald answers with a handshake Bundle, marks the subscription `active` and from then on sends
its event notifications and heartbeats as JSON Bundles (text frames). One socket may bind
several subscriptions and bind again with fresh tokens. A bad token or command gets an
OperationOutcome (a text frame) and the socket stays open.

A bind decides access again, as a read would, with the principal the token was issued to: a
Subscription deleted since, or no longer that principal's (e.g. put back by an administrator
under the same id), refuses the whole token with the message of an unknown one, so a socket
learns nothing about Subscriptions out of its reach.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from channels.attempt import Attempt
from channels.transport import Failure, Outcome
from channels.websocket.hub import Connection, SocketHub
from channels.websocket.tokens import BindingTokens, Redeemed
from fhirstore import BadRequest, FhirError, Store, Unprocessable, fhirjson, operation_outcome
from fhirstore.access import Access, Record
from fhirstore.api import FhirResponse, bound_by_token, boundary_router, request_access
from fhirstore.db import fhir_instant
from subscriptions import (
    Ledger,
    Lifecycle,
    SubscriptionProgress,
    SubscriptionRegistry,
    SubscriptionSpec,
    notification_bundle,
    operation_parameters,
    stored_spec,
)

SOCKET_PATH = "/websocket"
# A Subscription just created may not be registered for delivery yet (on Kafka the matcher does
# that a moment later): a bind waits this long for it.
REGISTRATION_WAIT_S = 5.0
MAX_MESSAGE_CHARS = 4096  # a command is a few hundred characters at most
# Frames above this are refused by the server itself (close code 1009) before Herald reads them.
MAX_FRAME_BYTES = 64 * 1024
_MAX_IDS = 100


def websocket_router(
    store: Store,
    ledger: Ledger,
    registry: SubscriptionRegistry,
    tokens: BindingTokens,
    hub: SocketHub,
    *,
    prefix: str,
    public_base: str | None,
    max_body_bytes: int,
    nudge: Callable[[str], Awaitable[None]],
    record_attempt: Callable[[Attempt], None] | None = None,
    record_write: Record | None = None,
) -> APIRouter:
    """`nudge(id)` asks the subscription's delivery to send what it owes now (not after its
    retry wait): called once a socket is bound. `record_attempt` is told of each handshake
    a bind sends (the audit trail, as for the dispatcher's attempts), `record_write` of each
    status write a bind makes."""
    router = boundary_router(prefix)
    sockets = APIRouter(prefix=prefix, dependencies=[Depends(bound_by_token)])
    lifecycle = Lifecycle(store, ledger, record=record_write)

    def fhir_base(request: Request | WebSocket) -> str:
        """The FHIR base of links in Bundles: http(s), also when asked over ws(s)."""
        if public_base:
            return public_base
        base = str(request.base_url).rstrip("/")
        if base.startswith("ws"):  # ws:// -> http://, wss:// -> https://
            base = "http" + base[2:]
        return base + prefix

    async def websocket_spec(subscription_id: str, access: Access | None) -> SubscriptionSpec:
        spec = await stored_spec(store, registry, subscription_id, access)
        if spec.channel.type != "websocket":
            raise Unprocessable(
                f"Subscription/{subscription_id} uses the {spec.channel.type} channel, not"
                " websocket"
            )
        return spec

    async def binding_token(request: Request, ids: list[str]) -> Response:
        params = await operation_parameters(request, max_body_bytes)
        ids = ids or [i for v in params.get("id", []) for i in v.split(",") if i]
        if not ids:
            raise BadRequest("name the Subscriptions to bind with one or more id parameters")
        if len(ids) > _MAX_IDS:
            raise BadRequest(f"at most {_MAX_IDS} Subscriptions per token")
        access = request_access(request)
        for subscription_id in ids:  # only the owner (or an administrator) gets a token
            await websocket_spec(subscription_id, access)
        issued = await tokens.issue(list(dict.fromkeys(ids)), access.principal)
        socket_url = "ws" + fhir_base(request).removeprefix("http") + SOCKET_PATH
        parameters = [
            {"name": "token", "valueString": issued.token},
            {"name": "expiration", "valueDateTime": fhir_instant(issued.expires_at)},
            *({"name": "subscription", "valueString": i} for i in issued.subscription_ids),
            {"name": "websocket-url", "valueUrl": socket_url},
        ]
        return FhirResponse({"resourceType": "Parameters", "parameter": parameters})

    @router.api_route("/Subscription/$get-ws-binding-token", methods=["GET", "POST"])
    async def type_token(request: Request) -> Response:
        return await binding_token(request, [])

    @router.api_route(
        "/Subscription/{subscription_id}/$get-ws-binding-token", methods=["GET", "POST"]
    )
    async def instance_token(request: Request, subscription_id: str) -> Response:
        return await binding_token(request, [subscription_id])

    def record(spec: SubscriptionSpec, outcome: Outcome) -> None:
        if record_attempt is not None:
            record_attempt(Attempt(spec, "handshake", (), outcome))

    async def reachable(redeemed: Redeemed) -> bool:
        """Whether every Subscription the token names is still there and still reached by
        the principal it was issued to (read as that principal would: hidden is missing)."""
        access = Access(redeemed.principal)
        for subscription_id in redeemed.subscription_ids:
            try:
                await store.read("Subscription", subscription_id, access=access)
            except FhirError:  # gone, or not that principal's (any more)
                return False
        return True

    async def bind(socket: WebSocket, connection: Connection, subscription_id: str) -> None:
        try:
            spec = await websocket_spec(subscription_id, None)  # `reachable` was the check
        except FhirError as error:  # no longer websocket, not registered yet
            await connection.send(_error(str(error)), within=hub.send_timeout)
            return
        progress = await _registered(ledger, subscription_id)
        if progress is None or progress.status == "off":
            problem = (
                f"Subscription/{subscription_id} is off"
                if progress
                else f"Subscription/{subscription_id} is not registered for delivery yet; "
                f"bind again in a moment"
            )
            await connection.send(_error(problem), within=hub.send_timeout)
            return
        now = store.clock.now()
        handshake = notification_bundle(
            spec,
            notification_type="handshake",
            status="active",
            events_since_start=progress.events_since_start,
            events=[],
            base_url=fhir_base(socket),
            now=now,
        )
        async with connection.lock:  # the handshake goes out before any notification
            began = asyncio.get_running_loop().time()
            try:
                await socket.send_text(fhirjson.dumps(handshake).decode())
            except Exception as error:
                closed = f"the socket closed: {error!r}"
                record(spec, Outcome(False, None, closed, 0.0, Failure.UNREACHABLE))
                raise
            record(spec, Outcome(True, None, None, asyncio.get_running_loop().time() - began))
            # Recorded before delivery can find the socket: a step that reads the ledger
            # from now on owes no handshake, one that read it before greets only sockets
            # bound before (`SocketHub.push`), so this socket gets one handshake.
            await ledger.sent(subscription_id, now=now)
            await hub.bind(connection, subscription_id)
        if progress.status != "active":
            await lifecycle.transition(subscription_id, "active")
        await nudge(subscription_id)

    @sockets.websocket(SOCKET_PATH)
    async def socket_endpoint(socket: WebSocket) -> None:
        await socket.accept()
        connection = Connection(socket)
        try:
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    await connection.send(
                        _error("send commands as text frames: bind-with-token <token>"),
                        within=hub.send_timeout,
                    )
                    continue
                if len(text) > MAX_MESSAGE_CHARS:
                    await connection.send(
                        _error(f"messages are at most {MAX_MESSAGE_CHARS} characters"),
                        within=hub.send_timeout,
                    )
                    continue
                command, _, argument = text.strip().partition(" ")
                if command != "bind-with-token":
                    await connection.send(
                        _error(f"unknown command {command[:40]!r}; send bind-with-token <token>"),
                        within=hub.send_timeout,
                    )
                    continue
                redeemed = await tokens.redeem(argument)
                if redeemed is None or not await reachable(redeemed):
                    await connection.send(
                        _error("unknown or expired token; get a new one from"
                               " Subscription/$get-ws-binding-token"),
                        within=hub.send_timeout,
                    )  # fmt: skip
                    continue
                for subscription_id in redeemed.subscription_ids:
                    await bind(socket, connection, subscription_id)
        except WebSocketDisconnect:
            pass
        finally:
            await hub.disconnect(connection)

    both = APIRouter()  # not `router.include_router`: that would add its dependency
    both.include_router(router)
    both.include_router(sockets)
    return both


def _error(diagnostics: str) -> str:
    return fhirjson.dumps(operation_outcome(diagnostics)).decode()


async def _registered(ledger: Ledger, subscription_id: str) -> SubscriptionProgress | None:
    """The subscription's delivery progress, waiting a little for its registration."""
    deadline = asyncio.get_running_loop().time() + REGISTRATION_WAIT_S
    progress = await ledger.progress(subscription_id)
    while progress is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        progress = await ledger.progress(subscription_id)
    return progress
