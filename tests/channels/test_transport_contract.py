"""The `Transport` port's contract (channels/transport.py), held by every transport against a
real peer on 127.0.0.1: REST hook to an HTTP receiver, email to an SMTP server (aiosmtpd),
the Kafka queue to the test broker, WebSocket to a socket a real client holds.

Whatever the peer or the network does, `send` returns an `Outcome` (it never raises): `ok`
when the peer took the notification, and then the peer has exactly those bytes; else an
`error` a person can act on and the `failure` kind that tells a failure that may pass by itself
from one that needs someone to change something (`Failure.permanent`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from channels.email import EmailTransport, SmtpConfig
from channels.endpoints import EndpointGuard
from channels.queue import KafkaQueueTransport
from channels.resthook import RestHookTransport
from channels.transport import Delivery, Failure, Transport
from channels.websocket.hub import Connection, SocketHub
from channels.websocket.transport import WebSocketTransport
from events.bus.memory import MemoryBus
from fhirstore.clock import SystemClock
from fhirstore.db.engine import create_engine
from fhirstore.db.migrate import upgrade
from fhirstore.store import Store
from tests.support.deliveries import a_delivery
from tests.support.process import free_port
from tests.support.receiver import http_receiver
from tests.support.serving import serving
from tests.support.smtp import smtp_server
from tests.support.tcp import raw_server
from tests.support.topics import read_topic

BODY = b'{"resourceType":"Bundle","type":"subscription-notification"}'
WAIT_S = 30.0
SHORT_S = 1.0  # a delivery's timeout where the peer is meant to run out of it
LEEWAY_S = 5.0  # how much longer than its timeout a send may take to give up

T = TypeVar("T")


@dataclass
class Case:
    """A transport, a notification for it, and what its peer got (`nothing` where there is no
    peer to ask)."""

    transport: Transport
    delivery: Delivery
    received: Callable[[], Awaitable[list[bytes]]]


class Peers:
    """Starts what a case needs for the length of one test; the broker only when asked."""

    def __init__(self, request: pytest.FixtureRequest, stack: AsyncExitStack, tmp: Path):
        self._request = request
        self.stack = stack
        self.tmp = tmp

    async def enter(self, context: Any) -> Any:
        return await self.stack.enter_async_context(context)

    def closing(self, transport: T) -> T:
        self.stack.push_async_callback(transport.aclose)  # type: ignore[attr-defined]
        return transport

    def kafka(self) -> str:
        return str(self._request.getfixturevalue("kafka_bootstrap"))


@pytest.fixture
async def peers(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Peers]:
    async with AsyncExitStack() as stack:
        yield Peers(request, stack, tmp_path)


def delivery(endpoint: str, **changes: Any) -> Delivery:
    return a_delivery(endpoint, changes.pop("body", BODY), **{"timeout": WAIT_S, **changes})


async def nothing() -> list[bytes]:
    return []


# --- REST hook --------------------------------------------------------------------------------


async def rest_hook(peers: Peers, status: int = 200, *, hang: bool = False) -> Case:
    receiver = await peers.enter(http_receiver())
    receiver.respond_with(status)
    if hang:
        receiver.hang()
    transport = peers.closing(RestHookTransport(user_agent="Herald/test"))
    timeout = SHORT_S if hang else WAIT_S

    async def received() -> list[bytes]:
        return [r.body for r in receiver.requests if r.status is not None and r.status < 300]

    return Case(transport, delivery(receiver.url, timeout=timeout), received)


async def rest_hook_nobody_listens(peers: Peers) -> Case:
    transport = peers.closing(RestHookTransport(user_agent="Herald/test"))
    return Case(transport, delivery(f"http://127.0.0.1:{free_port()}/hook"), nothing)


async def rest_hook_not_allowed(peers: Peers) -> Case:
    """A loopback endpoint, with the endpoint guard on (no allow-list)."""
    guarded = RestHookTransport(user_agent="Herald/test", guard=EndpointGuard())
    return Case(peers.closing(guarded), delivery(f"http://127.0.0.1:{free_port()}/x"), nothing)


async def rest_hook_not_http(peers: Peers) -> Case:
    transport = peers.closing(RestHookTransport(user_agent="Herald/test"))
    return Case(transport, delivery("ftp://127.0.0.1/hook"), nothing)


# --- email ------------------------------------------------------------------------------------


def email_transport(peers: Peers, port: int) -> Transport:
    config = SmtpConfig(host="127.0.0.1", port=port, sender="herald@example.org")
    return peers.closing(EmailTransport(config))


async def email(peers: Peers, *, refuse: str = "", defer: str = "") -> Case:
    port = free_port()
    mailbox = peers.stack.enter_context(smtp_server(port))
    mailbox.refuse, mailbox.defer = {refuse} - {""}, {defer} - {""}

    async def received() -> list[bytes]:
        attachments = [a for m in mailbox.messages() for a in m.iter_attachments()]
        return [a.get_content() for a in attachments]

    recipient = refuse or defer or "ops@example.org"
    return Case(email_transport(peers, port), delivery(f"mailto:{recipient}"), received)


async def email_nobody_listens(peers: Peers) -> Case:
    return Case(email_transport(peers, free_port()), delivery("mailto:ops@example.org"), nothing)


async def email_silent_server(peers: Peers) -> Case:
    port = free_port()
    await peers.enter(raw_server(port, b""))
    sent = delivery("mailto:ops@example.org", timeout=SHORT_S)
    return Case(email_transport(peers, port), sent, nothing)


async def email_no_address(peers: Peers) -> Case:
    return Case(email_transport(peers, free_port()), delivery("mailto:"), nothing)


# --- Kafka queue ------------------------------------------------------------------------------


async def kafka(peers: Peers, *, body: bytes = BODY) -> Case:
    bootstrap = peers.kafka()
    topic = f"notify.contract-{uuid.uuid4().hex[:12]}"

    async def received() -> list[bytes]:
        return [record.value or b"" for record in await read_topic(bootstrap, topic, 1)]

    transport = peers.closing(KafkaQueueTransport(bootstrap))
    return Case(transport, delivery(f"kafka:{topic}", body=body), received)


async def kafka_too_large(peers: Peers) -> Case:
    case = await kafka(peers, body=b"x" * 2_000_000)
    return Case(case.transport, case.delivery, nothing)  # reading an empty topic only waits


async def kafka_nobody_listens(peers: Peers) -> Case:
    transport = peers.closing(KafkaQueueTransport(f"127.0.0.1:{free_port()}"))
    return Case(transport, delivery("kafka:notify.orders", timeout=SHORT_S * 2), nothing)


async def kafka_silent_broker(peers: Peers) -> Case:
    port = free_port()
    await peers.enter(raw_server(port, b""))
    transport = peers.closing(KafkaQueueTransport(f"127.0.0.1:{port}"))
    return Case(transport, delivery("kafka:notify.orders", timeout=SHORT_S), nothing)


async def kafka_no_topic(peers: Peers) -> Case:
    transport = peers.closing(KafkaQueueTransport(f"127.0.0.1:{free_port()}"))
    return Case(transport, delivery("kafka:"), nothing)


# --- WebSocket --------------------------------------------------------------------------------


async def websocket_hub(peers: Peers) -> SocketHub:
    engine = create_engine(f"sqlite+aiosqlite:///{peers.tmp}/herald.db")
    peers.stack.push_async_callback(engine.dispose)
    await upgrade(engine)
    return SocketHub(Store(engine, SystemClock()), MemoryBus(), owner="contract")


async def websocket(peers: Peers) -> Case:
    """A real client's socket, bound to `sub-1` in the hub (as `bind-with-token` binds it)."""
    hub = await websocket_hub(peers)
    bound = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        socket = WebSocket(scope, receive, send)
        await socket.accept()
        await hub.bind(Connection(socket), "sub-1")
        bound.set()
        await socket.receive()  # until the client goes

    port = await peers.enter(serving(app))
    client = await peers.enter(connect(f"ws://127.0.0.1:{port}/"))
    async with asyncio.timeout(WAIT_S):
        await bound.wait()

    async def received() -> list[bytes]:
        async with asyncio.timeout(WAIT_S):
            return [str(await client.recv()).encode()]

    return Case(peers.closing(WebSocketTransport(hub)), delivery("websocket"), received)


async def websocket_none_bound(peers: Peers) -> Case:
    transport = peers.closing(WebSocketTransport(await websocket_hub(peers)))
    return Case(transport, delivery("websocket"), nothing)


# --- the contract -----------------------------------------------------------------------------

Scenario = Callable[[Peers], Awaitable[Case]]

TAKEN: list[Any] = [
    pytest.param(rest_hook, id="rest-hook"),
    pytest.param(email, id="email"),
    pytest.param(kafka, id="kafka"),
    pytest.param(websocket, id="websocket"),
]


async def rest_hook_404(peers: Peers) -> Case:
    return await rest_hook(peers, 404)


async def rest_hook_redirect(peers: Peers) -> Case:
    return await rest_hook(peers, 308)


async def rest_hook_503(peers: Peers) -> Case:
    return await rest_hook(peers, 503)


async def rest_hook_rate_limited(peers: Peers) -> Case:
    return await rest_hook(peers, 429)


async def rest_hook_hung(peers: Peers) -> Case:
    return await rest_hook(peers, hang=True)


async def email_refused(peers: Peers) -> Case:
    return await email(peers, refuse="gone@example.org")


async def email_deferred(peers: Peers) -> Case:
    return await email(peers, defer="busy@example.org")


FAILED: list[Any] = [
    pytest.param(rest_hook_nobody_listens, Failure.UNREACHABLE, id="rest-hook-refused"),
    pytest.param(rest_hook_hung, Failure.TIMEOUT, id="rest-hook-timeout"),
    pytest.param(rest_hook_404, Failure.REJECTED, id="rest-hook-404"),
    pytest.param(rest_hook_redirect, Failure.REJECTED, id="rest-hook-redirect"),
    pytest.param(rest_hook_503, Failure.UNAVAILABLE, id="rest-hook-503"),
    pytest.param(rest_hook_rate_limited, Failure.UNAVAILABLE, id="rest-hook-429"),
    pytest.param(rest_hook_not_allowed, Failure.BLOCKED, id="rest-hook-not-allowed"),
    pytest.param(rest_hook_not_http, Failure.BLOCKED, id="rest-hook-not-http"),
    pytest.param(email_nobody_listens, Failure.UNREACHABLE, id="email-refused"),
    pytest.param(email_silent_server, Failure.TIMEOUT, id="email-timeout"),
    pytest.param(email_refused, Failure.REJECTED, id="email-550"),
    pytest.param(email_deferred, Failure.UNAVAILABLE, id="email-451"),
    pytest.param(email_no_address, Failure.BLOCKED, id="email-no-address"),
    pytest.param(kafka_nobody_listens, Failure.UNREACHABLE, id="kafka-refused"),
    pytest.param(kafka_silent_broker, Failure.TIMEOUT, id="kafka-timeout"),
    pytest.param(kafka_too_large, Failure.REJECTED, id="kafka-too-large"),
    pytest.param(kafka_no_topic, Failure.BLOCKED, id="kafka-no-topic"),
    pytest.param(websocket_none_bound, Failure.UNREACHABLE, id="websocket-none-bound"),
]


@pytest.mark.parametrize("scenario", TAKEN)
async def test_a_notification_the_peer_takes_is_ok_and_arrives_as_sent(
    scenario: Scenario, peers: Peers
) -> None:
    case = await scenario(peers)

    outcome = await case.transport.send(case.delivery)

    assert outcome.ok, outcome.error
    assert outcome.error is None and outcome.failure is None
    assert outcome.elapsed >= 0
    assert await case.received() == [case.delivery.body]


@pytest.mark.parametrize(("scenario", "failure"), FAILED)
async def test_a_failure_is_an_outcome_of_its_kind_never_an_exception(
    scenario: Scenario, failure: Failure, peers: Peers
) -> None:
    case = await scenario(peers)

    started = time.monotonic()
    outcome = await case.transport.send(case.delivery)
    took = time.monotonic() - started

    assert not outcome.ok
    assert outcome.failure is failure, outcome.error
    assert outcome.error, "a failure says what went wrong"
    assert took < case.delivery.timeout + LEEWAY_S  # bounded by the delivery's timeout
    assert await case.received() == []


@pytest.mark.parametrize(
    ("scenario", "permanent"),
    [
        pytest.param(rest_hook_404, True, id="http-4xx"),
        pytest.param(rest_hook_503, False, id="http-5xx"),
        pytest.param(email_refused, True, id="smtp-5xx"),
        pytest.param(email_deferred, False, id="smtp-4xx"),
        pytest.param(rest_hook_not_allowed, True, id="not-allowed"),
        pytest.param(rest_hook_nobody_listens, False, id="unreachable"),
    ],
)
async def test_a_permanent_failure_is_told_from_one_that_may_pass(
    scenario: Scenario, permanent: bool, peers: Peers
) -> None:
    case = await scenario(peers)

    outcome = await case.transport.send(case.delivery)

    assert outcome.failure is not None and outcome.failure.permanent is permanent
