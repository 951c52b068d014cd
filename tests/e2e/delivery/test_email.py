"""The email channel end to end: a Subscription with a `mailto:` endpoint, Herald sending
through a real SMTP server (aiosmtpd) on 127.0.0.1. Each test runs embedded and on Kafka."""

from __future__ import annotations

import asyncio
import uuid
from email.message import EmailMessage
from typing import Any

import orjson

from tests.e2e.delivery.conftest import (
    HeraldFactory,
    event_numbers,
    notification_type,
    subscribe,
    subscription,
    wait_for_status,
)
from tests.support.process import free_port
from tests.support.smtp import Mailbox, smtp_server
from tests.support.waiting import eventually

CARE_TEAM = "care-team@example.org"


def email_subscription(
    patient: str, *, content: str | None = None, payload: str | None = None, to: str = CARE_TEAM
) -> dict[str, Any]:
    resource = subscription("", filters=(f"Observation?subject=Patient/{patient}",))
    channel: dict[str, Any] = {"type": "email", "endpoint": f"mailto:{to}"}
    if payload is not None:
        channel["payload"] = payload
    if content is not None:
        channel["_payload"] = resource["channel"]["_payload"]
        channel["_payload"]["extension"][0]["valueCode"] = content
    resource["channel"] = channel
    return resource


def bundle_of(message: EmailMessage) -> dict[str, Any]:
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/fhir+json"
    return dict(orjson.loads(attachment.get_payload(decode=True)))


async def mails(mailbox: Mailbox, count: int) -> list[EmailMessage]:
    await eventually(
        lambda: _at_least(mailbox, count),
        within=20,
        what=lambda: f"{len(mailbox.envelopes)} emails arrived, expected {count}",
    )
    return mailbox.messages()


async def _at_least(mailbox: Mailbox, count: int) -> bool:
    return len(mailbox.envelopes) >= count


def observation(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "blood pressure"},
        "subject": {"reference": f"Patient/{patient}"},
    }


async def test_handshake_and_notification_by_email(start_herald: HeraldFactory) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    port = free_port()
    with smtp_server(port) as mailbox:
        async with start_herald(smtp_host="127.0.0.1", smtp_port=port) as (_, client):
            made = await client.post("/Subscription", json=email_subscription(patient))
            assert made.status_code == 201, made.text
            sid = made.json()["id"]
            await wait_for_status(client, sid, "active")
            await client.post("/Observation", json=observation(patient))
            handshake, event = await mails(mailbox, 2)

    assert handshake["To"] == CARE_TEAM
    assert notification_type(bundle_of(handshake)) == "handshake"
    assert notification_type(bundle_of(event)) == "event-notification"
    assert event_numbers(bundle_of(event)) == [1]
    # Content defaults to empty for email: no focus, no resource leaves by mail.
    assert len(bundle_of(event)["entry"]) == 1
    assert sid in event["Subject"]


async def test_smtp_server_down_then_up(start_herald: HeraldFactory) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    port = free_port()
    async with start_herald(smtp_host="127.0.0.1", smtp_port=port) as (_, client):
        with smtp_server(port) as mailbox:
            made = await client.post("/Subscription", json=email_subscription(patient))
            sid = made.json()["id"]
            await wait_for_status(client, sid, "active")
        # The SMTP server is gone: the notification fails and the subscription says so.
        await client.post("/Observation", json=observation(patient))
        await wait_for_status(client, sid, "error")
        error = (await client.get(f"/Subscription/{sid}")).json()["error"]
        await asyncio.sleep(0.2)
        with smtp_server(port) as mailbox:
            [event] = await mails(mailbox, 1)
            await wait_for_status(client, sid, "active")

    assert f"127.0.0.1:{port}" in error
    assert event_numbers(bundle_of(event)) == [1]


async def test_email_is_refused_where_the_server_cannot_or_may_not_send_it(
    start_herald: HeraldFactory,
) -> None:
    async with start_herald() as (_, client):
        no_smtp = await client.post("/Subscription", json=email_subscription("p"))
    async with start_herald(smtp_host="127.0.0.1", smtp_port=free_port()) as (_, client):
        full = await client.post(
            "/Subscription", json=email_subscription("p", content="full-resource")
        )
        allowed = await client.post(
            "/Subscription", json=email_subscription("p", content="id-only")
        )

    assert no_smtp.status_code == 422
    assert "HERALD_SMTP_HOST" in no_smtp.json()["issue"][0]["diagnostics"]
    assert full.status_code == 422
    assert "HERALD_EMAIL_FULL_RESOURCE" in full.json()["issue"][0]["diagnostics"]
    assert allowed.status_code == 201


# The IG's email payloads: (payload, the mail's MIME structure, whether the Bundle is attached).
MAIL_FORMS = {
    "text@example.org": ("text/plain", ["text/plain"], False),
    "text-attached@example.org": (
        "text/plain;attach=application/fhir+json",
        ["multipart/mixed", "text/plain", "application/fhir+json"],
        True,
    ),
    "html@example.org": (
        "text/html",
        ["multipart/alternative", "text/plain", "text/html"],
        False,
    ),
    "html-attached@example.org": (
        'text/html;attach="application/fhir+json"',
        [
            "multipart/mixed",
            "multipart/alternative",
            "text/plain",
            "text/html",
            "application/fhir+json",
        ],
        True,
    ),
}


async def test_each_email_payload_gives_its_mail_form(start_herald: HeraldFactory) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    port = free_port()
    with smtp_server(port) as mailbox:
        async with start_herald(smtp_host="127.0.0.1", smtp_port=port) as (_, client):
            for to, (payload, _, _) in MAIL_FORMS.items():
                resource = email_subscription(patient, payload=payload, to=to, content="id-only")
                await subscribe(client, resource)
            made = await client.post("/Observation", json=observation(patient))
            focus = f"Observation/{made.json()['id']}"
            await mails(mailbox, 2 * len(MAIL_FORMS))

    events = {
        envelope.rcpt_tos[0]: message
        for envelope, message in zip(mailbox.envelopes, mailbox.messages(), strict=True)
        if "event" in message["Subject"]
    }
    assert set(events) == set(MAIL_FORMS)
    for to, (_, structure, attached) in MAIL_FORMS.items():
        event = events[to]
        assert [part.get_content_type() for part in event.walk()] == structure, to
        text = event.get_body(preferencelist=("plain",))
        assert text is not None and focus in text.get_content(), to
        assert "blood pressure" not in text.get_content(), to  # references, never content
        html = event.get_body(preferencelist=("html",))
        if html is not None:
            assert focus in html.get_content() and "blood pressure" not in html.get_content()
        if attached:
            bundle = bundle_of(event)
            assert notification_type(bundle) == "event-notification", to
            assert event_numbers(bundle) == [1], to
            # id-only: the focus is referenced, its content is not in the Bundle.
            assert bundle["entry"][1]["fullUrl"].endswith(focus), to
            assert "resource" not in bundle["entry"][1], to
        else:
            assert list(event.iter_attachments()) == [], to


# A payload the channel cannot carry: (channel type, payload, what the 422 says is accepted).
BAD_PAYLOADS = [
    ("rest-hook", "text/plain", "application/fhir+json or application/json"),
    ("email", "text/plain;attach=application/xml", "attach must be application/fhir+json"),
    ("email", "application/fhir+json;fhirVersion=5.0", "fhirVersion must be 4.0 (R4) or 4.3"),
    ("email", "text/csv", "text/plain or text/html with an optional ;attach="),
    ("email", "text/html;charset=latin-1", "only charset=utf-8"),
    ("email", "text/plain;inline=yes", "unsupported parameter 'inline'"),
]


async def test_a_payload_the_channel_cannot_carry_is_refused_saying_what_is_accepted(
    start_herald: HeraldFactory,
) -> None:
    refusals = []
    async with start_herald(smtp_host="127.0.0.1", smtp_port=free_port()) as (_, client):
        for channel_type, payload, _ in BAD_PAYLOADS:
            resource = email_subscription("p", payload=payload)
            if channel_type == "rest-hook":
                resource["channel"]["type"] = "rest-hook"
                resource["channel"]["endpoint"] = "https://receiver.example.org/hook"
            refusals.append(await client.post("/Subscription", json=resource))

    for (_, payload, accepted), refused in zip(BAD_PAYLOADS, refusals, strict=True):
        assert refused.status_code == 422, (payload, refused.text)
        issue = refused.json()["issue"][0]
        assert accepted in issue["diagnostics"], payload
        assert issue["expression"] == ["Subscription.channel.payload"], payload


async def test_full_resource_is_attached_where_allowed_and_never_in_the_body(
    start_herald: HeraldFactory,
) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    port = free_port()
    settings = {"smtp_host": "127.0.0.1", "smtp_port": port, "email_full_resource": True}
    payload = "text/html;attach=application/fhir+json"
    with smtp_server(port) as mailbox:
        async with start_herald(**settings) as (_, client):
            resource = email_subscription(patient, payload=payload, content="full-resource")
            await subscribe(client, resource)
            await client.post("/Observation", json=observation(patient))
            _, event = await mails(mailbox, 2)

    assert bundle_of(event)["entry"][1]["resource"]["code"] == {"text": "blood pressure"}
    for subtype in ("plain", "html"):
        body = event.get_body(preferencelist=(subtype,))
        assert body is not None and "Observation/" in body.get_content()
        assert "blood pressure" not in body.get_content()


def classic_email(patient: str, payload: str | None) -> dict[str, Any]:
    """A classic R4 Subscription (criteria, no topic) mailing changes of `patient`'s
    Observations to the care team."""
    channel: dict[str, Any] = {"type": "email", "endpoint": f"mailto:{CARE_TEAM}"}
    if payload is not None:
        channel["payload"] = payload
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": f"Observation?subject=Patient/{patient}",
        "channel": channel,
    }


async def test_classic_email_with_a_text_payload_mails_nothing_of_the_resource(
    start_herald: HeraldFactory,
) -> None:
    """`text/plain` without `attach` mails no resource, so it needs no permission for
    full-resource content; with `attach` the resource is attached, which does."""
    patient = f"p-{uuid.uuid4().hex[:8]}"
    port = free_port()
    with smtp_server(port) as mailbox:
        async with start_herald(smtp_host="127.0.0.1", smtp_port=port) as (_, client):
            attached = await client.post(
                "/Subscription",
                json=classic_email(patient, "text/plain;attach=application/fhir+json"),
            )
            made = await client.post("/Subscription", json=classic_email(patient, "text/plain"))
            assert made.status_code == 201, made.text
            await wait_for_status(client, made.json()["id"], "active")
            created = await client.post("/Observation", json=observation(patient))
            [mail] = await mails(mailbox, 1)  # classic subscriptions have no handshake

    assert attached.status_code == 422
    assert "HERALD_EMAIL_FULL_RESOURCE" in attached.json()["issue"][0]["diagnostics"]
    assert mail.get_content_type() == "text/plain" and not list(mail.iter_attachments())
    body = mail.get_content()
    assert f"Subscription/{made.json()['id']}" in body
    assert created.json()["id"] not in body and "blood pressure" not in body
