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
    subscription,
    wait_for_status,
)
from tests.support.process import free_port
from tests.support.smtp import Mailbox, smtp_server
from tests.support.waiting import eventually

CARE_TEAM = "care-team@example.org"


def email_subscription(patient: str, *, content: str | None = None) -> dict[str, Any]:
    resource = subscription("", filters=(f"Observation?subject=Patient/{patient}",))
    channel: dict[str, Any] = {"type": "email", "endpoint": f"mailto:{CARE_TEAM}"}
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
