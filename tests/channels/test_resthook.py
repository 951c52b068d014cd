"""REST hook delivery against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from channels.resthook import RestHookTransport, signature
from channels.transport import Delivery, Outcome
from fhirstore.clock import FrozenClock
from tests.support.deliveries import a_delivery
from tests.support.process import free_port
from tests.support.receiver import http_receiver

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BODY = b'{"resourceType":"Bundle","type":"history"}'


@pytest.fixture
async def transport() -> AsyncIterator[RestHookTransport]:
    hook = RestHookTransport(user_agent="Herald/test", max_per_host=4, clock=FrozenClock(NOW))
    yield hook
    await hook.aclose()


def delivery(endpoint: str, **changes: object) -> Delivery:
    body = changes.pop("body", BODY)
    return a_delivery(endpoint, body, **changes)  # type: ignore[arg-type]


async def test_posts_body_with_headers_key_and_signature(transport: RestHookTransport) -> None:
    async with http_receiver() as receiver:
        outcome = await transport.send(
            delivery(
                receiver.url,
                headers=(("Authorization", "Bearer s3cret"), ("X-Tenant", "north")),
                secret="shh",
            )
        )
        [request] = await receiver.wait_for(1)

    assert outcome.ok and outcome.status_code == 200 and outcome.error is None
    assert request.method == "POST" and request.path == "/hook"
    assert request.body == BODY
    headers = request.headers
    assert headers["content-type"] == "application/fhir+json"
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-tenant"] == "north"
    assert headers["idempotency-key"] == "sub-1:7"
    assert headers["user-agent"] == "Herald/test"
    parts = dict(part.split("=", 1) for part in headers["x-herald-signature"].split(","))
    assert int(parts["t"]) == int(NOW.timestamp())
    assert hmac.compare_digest(parts["v1"], signature("shh", int(parts["t"]), BODY))
    assert not hmac.compare_digest(parts["v1"], signature("other", int(parts["t"]), BODY))


async def test_empty_post_has_no_content_type_and_no_signature_without_secret(
    transport: RestHookTransport,
) -> None:
    async with http_receiver() as receiver:
        outcome = await transport.send(delivery(receiver.url, body=None, content_type=None))
        [request] = await receiver.wait_for(1)

    assert outcome.ok
    assert request.body == b""
    assert "content-type" not in request.headers
    assert "x-herald-signature" not in request.headers
    assert request.headers["idempotency-key"] == "sub-1:7"


async def test_signature_covers_an_empty_body(transport: RestHookTransport) -> None:
    async with http_receiver() as receiver:
        await transport.send(delivery(receiver.url, body=None, content_type=None, secret="k"))
        [request] = await receiver.wait_for(1)

    t, v1 = (p.split("=", 1)[1] for p in request.headers["x-herald-signature"].split(","))
    assert v1 == signature("k", int(t), b"")


async def test_channel_headers_cannot_replace_herald_headers(transport: RestHookTransport) -> None:
    async with http_receiver() as receiver:
        await transport.send(
            delivery(
                receiver.url,
                headers=(("Idempotency-Key", "forged"), ("content-type", "text/plain")),
            )
        )
        [request] = await receiver.wait_for(1)

    assert request.headers["idempotency-key"] == "sub-1:7"
    assert request.headers["content-type"] == "application/fhir+json"


async def test_server_error_is_a_failure_that_says_so(transport: RestHookTransport) -> None:
    async with http_receiver() as receiver:
        receiver.respond_with(500)
        outcome = await transport.send(delivery(receiver.url))

    assert not outcome.ok
    assert outcome.status_code == 500
    assert outcome.error == f"HTTP 500 from {receiver.url}"


async def test_connection_refused_is_a_failure_that_names_the_endpoint(
    transport: RestHookTransport,
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/x"  # nothing listens there
    outcome = await transport.send(delivery(endpoint))

    assert not outcome.ok
    assert outcome.status_code is None
    assert outcome.error == f"connection refused by {endpoint}"


async def test_receiver_that_never_answers_times_out(transport: RestHookTransport) -> None:
    async with http_receiver() as receiver:
        receiver.hang()
        outcome = await transport.send(delivery(receiver.url, timeout=0.5))
        [request] = await receiver.wait_for(1)

    assert request.status is None  # it arrived, and was never answered
    assert not outcome.ok and outcome.status_code is None
    assert outcome.error == f"no answer from {receiver.url} within 0.5 s"
    assert 0.4 <= outcome.elapsed < 5  # bounded by the delivery's timeout, not the receiver


async def test_redirect_is_not_followed(transport: RestHookTransport) -> None:
    async with http_receiver() as receiver:
        receiver.respond_with(307)
        outcome = await transport.send(delivery(receiver.url))
        await asyncio.sleep(0.2)  # a followed redirect would arrive by now

    assert not outcome.ok
    assert outcome.status_code == 307
    assert outcome.error is not None
    assert f"HTTP 307 from {receiver.url}" in outcome.error
    assert f"{receiver.url}/moved" in outcome.error and "not followed" in outcome.error
    assert len(receiver.requests) == 1


async def test_receiver_recovers_after_reset(transport: RestHookTransport) -> None:
    async with http_receiver() as receiver:
        receiver.respond_with(503)
        first = await transport.send(delivery(receiver.url))
        receiver.reset()
        second = await transport.send(delivery(receiver.url))

    assert [first.ok, second.ok] == [False, True]
    assert [r.status for r in receiver.requests] == [503, 200]


async def test_sequential_sends_reuse_one_connection(transport: RestHookTransport) -> None:
    async with http_receiver() as receiver:
        outcomes = [await transport.send(delivery(receiver.url)) for _ in range(25)]
        requests = await receiver.wait_for(25)

    assert all(o.ok for o in outcomes)
    assert len({r.client for r in requests}) == 1


async def test_concurrent_sends_share_a_bounded_set_of_connections() -> None:
    hook = RestHookTransport(user_agent="Herald/test", max_per_host=5)
    try:
        async with http_receiver() as receiver:
            for _ in range(3):
                outcomes = await asyncio.gather(
                    *(hook.send(delivery(receiver.url)) for _ in range(20))
                )
                assert all(o.ok for o in outcomes)
            requests = await receiver.wait_for(60)
    finally:
        await hook.aclose()

    assert len({r.client for r in requests}) <= 5


async def test_a_hung_host_gets_at_most_its_share_of_connections() -> None:
    hook = RestHookTransport(user_agent="Herald/test", max_per_host=2)
    try:
        async with http_receiver() as receiver:
            receiver.hang()
            held = [asyncio.create_task(hook.send(delivery(receiver.url, timeout=1))) for _ in "ab"]
            await receiver.wait_for(2)
            third = await hook.send(delivery(receiver.url, timeout=0.3))
            arrived = len(receiver.requests)
            outcomes: list[Outcome] = await asyncio.gather(*held)
    finally:
        await hook.aclose()

    assert arrived == 2
    host = receiver.url.split("/")[2]
    assert not third.ok and third.status_code is None
    assert third.error is not None
    assert third.error.startswith(f"no free connection to {host} within 0.3 s")
    assert [o.error for o in outcomes] == [f"no answer from {receiver.url} within 1 s"] * 2


async def test_unsupported_scheme_is_a_failure_not_an_exception(
    transport: RestHookTransport,
) -> None:
    outcome = await transport.send(delivery("ftp://127.0.0.1/hook"))

    assert not outcome.ok and outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("could not send to ftp://")


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # printf '1700000000.{}' | openssl dgst -sha256 -hmac secret
    expected = "b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
    assert signature("secret", 1700000000, b"{}") == expected


async def test_receiver_lets_held_requests_go_when_it_shuts_down(
    transport: RestHookTransport,
) -> None:
    async with asyncio.timeout(10):
        async with http_receiver() as receiver:
            receiver.hang()
            sending = asyncio.create_task(transport.send(delivery(receiver.url, timeout=30)))
            await receiver.wait_for(1)
        outcome = await sending

    assert not outcome.ok and outcome.status_code == 503


async def test_receiver_wait_for_says_what_arrived() -> None:
    async with http_receiver() as receiver:
        with pytest.raises(AssertionError, match=r"expected at least 1 requests .* got 0"):
            await receiver.wait_for(1, timeout=0.2)
