"""The safe-endpoints guard: which REST hook endpoints Herald refuses, what the administrator's
allow-list lets through, and the email recipient allow-list. Names resolve through a made-up
table (no real DNS); the only sockets are a receiver on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from ipaddress import ip_address

import pytest

from channels.endpoints import (
    AllowList,
    EndpointGuard,
    EndpointRefused,
    Recipients,
    Resolve,
    SafeEndpoints,
    classify,
)
from channels.resthook import RestHookTransport
from subscriptions.model import Channel
from tests.support.deliveries import a_delivery
from tests.support.receiver import http_receiver

PUBLIC = "93.184.216.34"


def made_up_dns(table: dict[str, str | Sequence[str]]) -> Resolve:
    """A resolver that knows only `table` (read at each lookup, so a test may change it);
    like DNS, it takes a fully qualified name with its closing dot."""

    async def resolve(host: str) -> list[str]:
        answer = table.get(host.removesuffix("."))
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [answer] if isinstance(answer, str) else list(answer)

    return resolve


def guard(
    allowlist: str = "", names: dict[str, str | Sequence[str]] | None = None
) -> EndpointGuard:
    return EndpointGuard.parse(allowlist, made_up_dns(names or {}))


async def refusal(guard: EndpointGuard, url: str) -> str:
    with pytest.raises(EndpointRefused) as refused:
        await guard.check(url)
    return refused.value.reason


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("::ffff:192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("2002:a01:203::1", "private"),  # 6to4 around 10.1.2.3
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("240.0.0.1", "reserved"),
        ("64:ff9b::a01:203", "private"),  # NAT64 around 10.1.2.3
    ],
)
def test_addresses_that_are_not_public_are_named_by_kind(address: str, kind: str) -> None:
    found = classify(ip_address(address))
    assert found is not None and kind in found


@pytest.mark.parametrize(
    "address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::5db8:d822"]
)
def test_public_addresses_pass(address: str) -> None:
    assert classify(ip_address(address)) is None


async def test_public_https_endpoint_passes() -> None:
    await guard("", {"hooks.example.org": PUBLIC}).check("https://hooks.example.org/fhir-hook")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("https://127.0.0.1:8443/hook", "127.0.0.1 is a loopback address"),
        ("https://[::1]:8443/hook", "::1 is a loopback address"),
        ("https://[::ffff:127.0.0.1]/hook", "is a loopback address"),
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        ("https://[fd00:ec2::254]/latest/meta-data/", "cloud metadata address"),
        ("https://internal.example/hook", "internal.example resolves to 10.1.2.3"),
        ("https://INTERNAL.example./hook", "internal.example resolves to 10.1.2.3"),
        ("https://metadata.google.internal/computeMetadata/v1/", "cloud metadata service"),
        ("https://2130706433/hook", "in its usual form"),
        ("https://127.1/hook", "in its usual form"),
        ("https://nowhere.example/hook", "nowhere.example does not resolve"),
    ],
)
async def test_endpoints_that_reach_inside_are_refused_with_the_reason(
    url: str, words: str
) -> None:
    reason = await refusal(guard("10.9.9.9", {"internal.example": "10.1.2.3"}), url)
    assert words in reason


async def test_a_refusal_says_what_to_do() -> None:
    reason = await refusal(guard("", {"internal.example": "10.1.2.3"}), "https://internal.example/")
    assert "private address" in reason
    assert "public https endpoint" in reason and "HERALD_ENDPOINT_ALLOWLIST" in reason


async def test_every_address_of_a_name_must_pass() -> None:
    reason = await refusal(
        guard("", {"mixed.example": [PUBLIC, "10.1.2.3"]}), "https://mixed.example/"
    )
    assert "mixed.example resolves to 10.1.2.3" in reason


async def test_plain_http_is_refused_for_hosts_not_allow_listed() -> None:
    reason = await refusal(
        guard("", {"hooks.example.org": PUBLIC}), "http://hooks.example.org/hook"
    )
    assert "plain http" in reason and "https://" in reason


async def test_allow_listed_address_may_use_http() -> None:
    allowing = guard("127.0.0.1")
    await allowing.check("http://127.0.0.1:8080/hook")
    await allowing.check("https://[::ffff:127.0.0.1]/hook")
    assert "loopback" in await refusal(allowing, "http://127.0.0.2:8080/hook")
    assert "loopback" in await refusal(allowing, "http://[::1]:8080/hook")


async def test_allow_listed_network_covers_names_resolving_into_it() -> None:
    allowing = guard(
        "10.20.0.0/16, fd00:1::/64",
        {
            "hooks.internal": "10.20.3.4",
            "partly.internal": ["10.20.3.4", PUBLIC],
            "elsewhere.internal": "10.21.0.1",
        },
    )
    await allowing.check("https://10.20.200.1/hook")
    await allowing.check("https://[fd00:1::5]/hook")
    await allowing.check("http://hooks.internal/hook")
    await allowing.check("https://partly.internal/hook")
    assert "plain http" in await refusal(allowing, "http://partly.internal/hook")
    assert "10.21.0.1, which is a private" in await refusal(
        allowing, "https://elsewhere.internal/hook"
    )


async def test_allow_listed_name_passes_whatever_it_resolves_to() -> None:
    allowing = guard(
        "hooks.internal, metadata.google.internal",
        {"hooks.internal": "10.1.2.3", "metadata.google.internal": "169.254.169.254"},
    )
    await allowing.check("http://hooks.internal:8080/hook")
    await allowing.check("http://Hooks.Internal./hook")
    await allowing.check("https://metadata.google.internal/")


@pytest.mark.parametrize("entry", ["not a host!", "10.0.0.0/33", "hooks.example/path"])
def test_a_malformed_allow_list_is_refused_naming_the_setting(entry: str) -> None:
    with pytest.raises(ValueError, match="HERALD_ENDPOINT_ALLOWLIST") as error:
        AllowList.parse(f"hooks.internal, {entry}")
    assert repr(entry) in str(error.value)


def test_allow_list_reads_names_addresses_and_networks() -> None:
    allow = AllowList.parse(" Hooks.Internal. , 10.20.0.0/16,[::1], 192.168.1.7 ,")
    assert allow.allows_name("hooks.internal")
    assert allow.allows_address(ip_address("10.20.9.9"))
    assert allow.allows_address(ip_address("::1"))
    assert allow.allows_address(ip_address("::ffff:192.168.1.7"))
    assert not allow.allows_address(ip_address("192.168.1.8"))


async def test_transport_refuses_a_name_that_now_resolves_inside() -> None:
    table: dict[str, str | Sequence[str]] = {"hooks.example": "127.0.0.1"}
    checking = EndpointGuard.parse("127.0.0.1", made_up_dns(table))
    async with http_receiver() as receiver:
        url = f"http://hooks.example:{receiver.port}/hook"
        first = RestHookTransport(user_agent="Herald/test", guard=checking)
        delivered = await first.send(a_delivery(url, b"{}"))
        await first.aclose()
        table["hooks.example"] = "10.1.2.3"
        second = RestHookTransport(user_agent="Herald/test", guard=checking)
        refused = await second.send(a_delivery(url, b"{}"))
        await second.aclose()

    assert delivered.ok
    assert not refused.ok and refused.status_code is None
    assert refused.error is not None
    assert f"not sent to http://hooks.example:{receiver.port}/hook" in refused.error
    assert "hooks.example resolves to 10.1.2.3, which is a private address" in refused.error
    assert len(receiver.requests) == 1


async def test_the_address_checked_is_the_address_connected_to() -> None:
    """A name that answers a public address to the check and a private one next (DNS
    rebinding) gets no connection: the transport connects only to what its own lookup passed."""
    answers = iter([PUBLIC, "127.0.0.1"])

    async def rebinding(host: str) -> list[str]:
        return [next(answers)]

    checking = EndpointGuard.parse("10.9.9.9", rebinding)
    transport = RestHookTransport(user_agent="Herald/test", guard=checking)
    async with http_receiver() as receiver:
        url = f"https://rebind.example:{receiver.port}/hook"
        await checking.check(url)  # what a Subscription's create saw
        outcome = await transport.send(a_delivery(url, b"{}"))
        await transport.aclose()

    assert not outcome.ok and outcome.error is not None
    assert "rebind.example resolves to 127.0.0.1, which is a loopback address" in outcome.error
    assert receiver.requests == []


async def test_sender_refuses_a_literal_address_without_connecting() -> None:
    transport = RestHookTransport(user_agent="Herald/test", guard=guard("10.9.9.9"))
    async with http_receiver() as receiver:
        outcome = await transport.send(a_delivery(receiver.url, b"{}"))
        await transport.aclose()

    assert not outcome.ok and outcome.error is not None
    assert "127.0.0.1 is a loopback address" in outcome.error
    assert receiver.requests == []


def test_email_allow_list_empty_means_anyone_without_authentication() -> None:
    assert Recipients.parse(" , ", required=False) is None


def test_email_allow_list_empty_with_authentication_refuses_every_recipient() -> None:
    recipients = Recipients.parse("", required=True)
    assert recipients is not None
    problem = recipients.problem(["care-team@example.org"])
    assert problem is not None and "HERALD_EMAIL_ALLOWLIST" in problem


def test_email_allow_list_takes_addresses_and_domains() -> None:
    recipients = Recipients.parse("Ops@Example.org, @care.example", required=True)
    assert recipients is not None
    assert recipients.problem(["ops@example.org", "Nurse@Care.Example"]) is None
    problem = recipients.problem(["ops@example.org", "x@sub.care.example", "y@example.org"])
    assert problem is not None
    assert "x@sub.care.example, y@example.org" in problem and "HERALD_EMAIL_ALLOWLIST" in problem


def test_a_malformed_email_allow_list_is_refused() -> None:
    with pytest.raises(ValueError, match="HERALD_EMAIL_ALLOWLIST"):
        Recipients.parse("@example.org, example.org", required=False)


async def test_safe_endpoints_checks_rest_hooks_and_email_recipients() -> None:
    safe = SafeEndpoints(
        guard=guard("", {"internal.example": "10.1.2.3"}),
        recipients=Recipients.parse("@example.org", required=True),
    )
    hook = await safe.problem(Channel(type="rest-hook", endpoint="https://internal.example/"))
    mail = await safe.problem(Channel(type="email", endpoint="mailto:a@example.org,b@evil.test"))
    socket_channel = await safe.problem(Channel(type="websocket", endpoint=""))
    assert hook is not None and "10.1.2.3" in hook
    assert mail is not None and "b@evil.test" in mail and "a@example.org" not in mail
    assert socket_channel is None
    assert await safe.problem(Channel(type="email", endpoint="mailto:a@example.org")) is None
