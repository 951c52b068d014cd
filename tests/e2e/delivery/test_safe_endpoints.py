"""Safe endpoints end to end (embedded shape): with the guard on, a Subscription whose REST hook
would reach inside the network (loopback, private, metadata, a name resolving to a private
address) is refused with an OperationOutcome and nothing stored; an allow-listed receiver on
127.0.0.1 gets its notifications; a redirect is not followed; and an endpoint whose name later
resolves inside is refused at delivery, with the reason on the Subscription and in `$status`.

Names resolve through a made-up table (tests use no real DNS): `use_dns` gives the running
Herald a guard with that resolver, wired as `Runtime` wires the one built from its settings.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from channels.endpoints import EndpointGuard, Resolve, SafeEndpoints
from channels.resthook import RestHookTransport
from herald.runtime import Runtime
from subscriptions.registry import SUBSCRIPTION
from subscriptions.rules import subscription_rule
from tests.e2e.delivery.conftest import (
    QUICK_DELIVERY,
    notification_type,
    subscribe,
    subscription,
    wait_for_status,
)
from tests.support.herald import HeraldFactory, Running, running_herald, stored_counts
from tests.support.process import free_port
from tests.support.receiver import Receive, Scope, Send, http_receiver
from tests.support.serving import serving
from tests.support.smtp import smtp_server
from tests.support.waiting import eventually

ALLOWLIST_HINT = "HERALD_ENDPOINT_ALLOWLIST"


def made_up_dns(table: dict[str, str]) -> Resolve:
    """A resolver that knows only `table` (read at each lookup, so a test may change it)."""

    async def resolve(host: str) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [table[host]]

    return resolve


async def use_dns(runtime: Runtime, allowlist: str, table: dict[str, str]) -> None:
    """Give the running Herald a guard resolving through `table`, at create and at delivery
    (a new REST hook transport, so no connection opened before carries on)."""
    guard = EndpointGuard.parse(allowlist, made_up_dns(table))
    runtime.store.add_rule(
        SUBSCRIPTION, subscription_rule(runtime.registry, SafeEndpoints(guard=guard).problem)
    )
    previous = runtime.transports["rest-hook"]
    runtime.transports["rest-hook"] = RestHookTransport(user_agent="Herald/test", guard=guard)
    await previous.aclose()


@pytest.fixture
def herald(tmp_path: Path) -> HeraldFactory:
    """`async with herald(**settings) as (runtime, client)`: Herald embedded, quick retries."""

    def start(**settings: Any) -> AbstractAsyncContextManager[Running]:
        database = f"sqlite+aiosqlite:///{tmp_path}/{uuid.uuid4().hex[:8]}.db"
        return running_herald(database, **{**QUICK_DELIVERY, **settings})

    return start


def _patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female"}


REFUSED = {
    "loopback over http": ("http://127.0.0.1:{port}/hook", "127.0.0.1 is a loopback address"),
    "private address": ("https://10.0.0.1/hook", "10.0.0.1 is a private address"),
    "cloud metadata": (
        "https://169.254.169.254/latest/meta-data/",
        "169.254.169.254 is a cloud metadata address",
    ),
    "name resolving to a private address": (
        "https://internal.example/hook",
        "internal.example resolves to 10.1.2.3, which is a private address",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_endpoints_inside_the_network_are_refused_and_nothing_stored(
    herald: HeraldFactory, case: str
) -> None:
    endpoint, words = REFUSED[case]
    async with http_receiver() as receiver, herald(endpoint_allowlist="10.9.9.9") as running:
        runtime, client = running
        if "internal.example" in endpoint:
            await use_dns(runtime, "10.9.9.9", {"internal.example": "10.1.2.3"})
        before = await stored_counts(runtime)
        answer = await client.post(
            "/Subscription", json=subscription(endpoint.format(port=receiver.port))
        )
        assert await stored_counts(runtime) == before

    assert answer.status_code == 422, answer.text
    [issue] = answer.json()["issue"]
    assert issue["expression"] == ["Subscription.channel.endpoint"]
    assert words in issue["diagnostics"]
    assert "public https endpoint" in issue["diagnostics"]
    assert ALLOWLIST_HINT in issue["diagnostics"]
    assert receiver.requests == []


async def test_an_update_to_an_endpoint_inside_is_refused(herald: HeraldFactory) -> None:
    async with http_receiver() as receiver, herald(endpoint_allowlist="127.0.0.1") as running:
        _, client = running
        sid = await subscribe(client, subscription(receiver.url))
        changed = subscription("https://192.168.1.20/hook") | {"id": sid}
        answer = await client.put(f"/Subscription/{sid}", json=changed)
        stored = (await client.get(f"/Subscription/{sid}")).json()

    assert answer.status_code == 422, answer.text
    assert "192.168.1.20 is a private address" in answer.json()["issue"][0]["diagnostics"]
    assert stored["channel"]["endpoint"] == receiver.url


async def test_an_allow_listed_receiver_on_loopback_gets_its_notifications(
    herald: HeraldFactory,
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    async with http_receiver() as receiver, herald(endpoint_allowlist="127.0.0.1") as running:
        _, client = running
        await subscribe(client, subscription(receiver.url, filters=(f"Patient?_id={pid}",)))
        await client.put(f"/Patient/{pid}", json=_patient(pid))
        handshake, notification = await receiver.wait_for(2)

    assert notification_type(handshake.json) == "handshake"
    assert notification_type(notification.json) == "event-notification"


class _Redirecting:
    """An HTTP peer that answers every request with 307 to `location`, and records paths."""

    def __init__(self) -> None:
        self.location = ""
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope["path"])
        while (await receive()).get("more_body"):
            pass
        headers = [(b"location", self.location.encode()), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 307, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def redirecting() -> AsyncIterator[tuple[_Redirecting, int]]:
    peer = _Redirecting()
    async with serving(peer) as port:
        yield peer, port


async def test_a_redirect_to_a_forbidden_address_is_not_followed(
    herald: HeraldFactory, redirecting: tuple[_Redirecting, int]
) -> None:
    """The hook's host is allow-listed by name; it redirects to 127.0.0.1 itself, which is not:
    a followed redirect would show up at the peer as a request for the new path."""
    peer, port = redirecting
    peer.location = f"http://127.0.0.1:{port}/latest/meta-data/"
    async with herald(endpoint_allowlist="hooks.example") as (runtime, client):
        await use_dns(runtime, "hooks.example", {"hooks.example": "127.0.0.1"})
        made = await client.post(
            "/Subscription", json=subscription(f"http://hooks.example:{port}/hook")
        )
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        await wait_for_status(client, sid, "error")
        error = (await client.get(f"/Subscription/{sid}")).json()["error"]
        await asyncio.sleep(0.3)  # a followed redirect would have arrived by now

    assert "HTTP 307" in error and "redirects are not followed" in error
    assert peer.location in error
    assert peer.paths and set(peer.paths) == {"/hook"}


async def test_an_endpoint_whose_name_now_resolves_inside_is_refused_at_delivery(
    herald: HeraldFactory,
) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    dns = {"hooks.example": "127.0.0.1"}
    async with http_receiver() as receiver, herald(endpoint_allowlist="127.0.0.1") as running:
        runtime, client = running
        await use_dns(runtime, "127.0.0.1", dns)
        endpoint = f"http://hooks.example:{receiver.port}/hook"
        sid = await subscribe(client, subscription(endpoint, filters=(f"Patient?_id={pid}",)))
        [handshake] = await receiver.wait_for(1)

        dns["hooks.example"] = "10.1.2.3"
        await use_dns(runtime, "127.0.0.1", dns)
        await client.put(f"/Patient/{pid}", json=_patient(pid))
        await wait_for_status(client, sid, "error")
        error = (await client.get(f"/Subscription/{sid}")).json()["error"]
        statuses: list[dict[str, Any]] = []

        async def status_shows_the_reason() -> bool:
            [entry] = (await client.get(f"/Subscription/{sid}/$status")).json()["entry"]
            statuses.append(entry["resource"])
            return bool(statuses[-1].get("error"))

        await eventually(status_shows_the_reason, within=10, what=lambda: f"{statuses[-1]}")
        turned_off = await client.put(
            f"/Subscription/{sid}", json=subscription(endpoint) | {"id": sid, "status": "off"}
        )

    assert notification_type(handshake.json) == "handshake"
    assert f"not sent to {endpoint}" in error
    assert "hooks.example resolves to 10.1.2.3, which is a private address" in error
    assert statuses[-1]["status"] == "error"
    assert "10.1.2.3" in statuses[-1]["error"][0]["text"]
    assert len(receiver.requests) == 1  # the handshake only
    assert turned_off.status_code == 200, turned_off.text  # a client can always turn it off


def _email_subscription(address: str) -> dict[str, Any]:
    resource = subscription("", filters=("Patient?_id=nobody",))
    resource["channel"] = {"type": "email", "endpoint": f"mailto:{address}"}
    return resource


async def test_email_goes_only_to_allowed_recipients(herald: HeraldFactory) -> None:
    port = free_port()
    settings = {"smtp_host": "127.0.0.1", "smtp_port": port, "email_allowlist": "@example.org"}
    with smtp_server(port) as mailbox:
        async with herald(**settings) as running:
            runtime, client = running
            before = await stored_counts(runtime)
            refused = await client.post(
                "/Subscription", json=_email_subscription("someone@elsewhere.example")
            )
            assert await stored_counts(runtime) == before
            allowed = await client.post(
                "/Subscription", json=_email_subscription("care-team@example.org")
            )
            assert allowed.status_code == 201, allowed.text
            await wait_for_status(client, allowed.json()["id"], "active")

    assert refused.status_code == 422, refused.text
    diagnostics = refused.json()["issue"][0]["diagnostics"]
    assert "someone@elsewhere.example" in diagnostics and "HERALD_EMAIL_ALLOWLIST" in diagnostics
    assert [e.rcpt_tos for e in mailbox.envelopes] == [["care-team@example.org"]]
