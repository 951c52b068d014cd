"""Email delivery against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import orjson
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from channels.email import EmailTransport, SmtpConfig
from channels.endpoints import Recipients
from channels.mail import message_id
from channels.transport import Delivery, Outcome
from fhirstore.clock import FrozenClock
from tests.support.deliveries import a_delivery
from tests.support.process import free_port
from tests.support.smtp import Mailbox, smtp_server
from tests.support.tcp import raw_server

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BASE = "https://fhir.example.org/fhir"
SECRET_FINDING = "suspected melanoma"  # clinical content: must never reach the text


def notification(numbers: list[int], *, focus: bool = True) -> bytes:
    events: list[dict[str, Any]] = []
    for n in numbers:
        event: dict[str, Any] = {"eventNumber": str(n), "timestamp": "2024-05-01T11:59:00Z"}
        if focus:
            event["focus"] = {"reference": f"{BASE}/Observation/o{n}/_history/1"}
        events.append(event)
    status = {
        "resourceType": "SubscriptionStatus",
        "status": "active",
        "type": "event-notification",
        "eventsSinceSubscriptionStart": str(max(numbers)),
        "notificationEvent": events,
        "subscription": {"reference": f"{BASE}/Subscription/abc"},
        "topic": "http://example.org/topics/observations",
    }
    entries: list[dict[str, Any]] = [{"fullUrl": "urn:uuid:1", "resource": status}]
    if focus:
        entries += [
            {
                "fullUrl": f"{BASE}/Observation/o{n}",
                "resource": {"resourceType": "Observation", "valueString": SECRET_FINDING},
            }
            for n in numbers
        ]
    return orjson.dumps({"resourceType": "Bundle", "type": "history", "entry": entries})


BODY = notification([5, 6])


def delivery(endpoint: str, **changes: object) -> Delivery:
    fields = {"subscription_id": "abc", "idempotency_key": "abc:5", **changes}
    body = fields.pop("body", BODY)
    return a_delivery(endpoint, body, **fields)  # type: ignore[arg-type]


def check_password(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"herald", b"right")
    return AuthResult(success=ok, handled=False)


def transport(port: int, **options: Any) -> EmailTransport:
    config = SmtpConfig(host="127.0.0.1", port=port, sender="herald@example.org", **options)
    return EmailTransport(config, clock=FrozenClock(NOW))


def parts(message: EmailMessage) -> tuple[str, EmailMessage]:
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    [attachment] = list(message.iter_attachments())
    return text.get_content(), attachment  # type: ignore[return-value]


async def test_a_notification_arrives_with_text_and_bundle(port: int, mailbox: Mailbox) -> None:
    outcome = await transport(port).send(delivery("mailto:ops@example.org"))

    assert outcome == Outcome(ok=True, status_code=250, error=None, elapsed=outcome.elapsed)
    [envelope] = mailbox.envelopes
    assert envelope.mail_from == "herald@example.org"
    assert envelope.rcpt_tos == ["ops@example.org"]
    [message] = mailbox.messages()
    assert message["From"] == "herald@example.org"
    assert message["To"] == "ops@example.org"
    assert message["Subject"] == "Herald: 2 events for Subscription/abc"
    assert message["Herald-Idempotency-Key"] == "abc:5"
    assert message["Date"] == "Wed, 01 May 2024 12:00:00 +0000"
    assert message.get_content_type() == "multipart/mixed"
    text, attachment = parts(message)
    assert f"{BASE}/Subscription/abc" in text
    assert f"Event 5: {BASE}/Observation/o5/_history/1" in text
    assert f"Event 6: {BASE}/Observation/o6/_history/1" in text
    assert "http://example.org/topics/observations" in text
    assert SECRET_FINDING not in text
    assert attachment.get_content_type() == "application/fhir+json"
    assert attachment.get_filename() == "notification-5.json"
    assert attachment.get_content() == BODY


async def test_retries_share_a_message_id_and_other_notifications_do_not(
    port: int, mailbox: Mailbox
) -> None:
    hook = transport(port)
    for key in ("abc:5", "abc:5", "abc:7"):
        assert (await hook.send(delivery("mailto:ops@example.org", idempotency_key=key))).ok

    first, retry, other = (m["Message-ID"] for m in mailbox.messages())
    assert first == retry == message_id("abc:5")
    assert other != first


async def test_several_recipients_in_one_mailto(port: int, mailbox: Mailbox) -> None:
    endpoint = "mailto:ops@example.org,oncall%40example.org?subject=ignored"
    outcome = await transport(port).send(delivery(endpoint))

    assert outcome.ok
    [envelope] = mailbox.envelopes
    assert envelope.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    assert mailbox.messages()[0]["To"] == "ops@example.org, oncall@example.org"


async def test_server_down_then_up(port: int) -> None:
    hook = transport(port)
    down = await hook.send(delivery("mailto:ops@example.org"))

    assert not down.ok and down.status_code is None
    assert down.error is not None
    assert f"could not connect to the SMTP server 127.0.0.1:{port}" in down.error
    assert "HERALD_SMTP_HOST" in down.error

    with smtp_server(port) as mailbox:
        up = await hook.send(delivery("mailto:ops@example.org"))
    assert up.ok and len(mailbox.envelopes) == 1


async def test_a_refused_recipient_is_named_with_the_reply(port: int, mailbox: Mailbox) -> None:
    mailbox.refuse.add("gone@example.org")
    outcome = await transport(port).send(delivery("mailto:gone@example.org"))

    assert not outcome.ok and outcome.status_code == 550
    assert outcome.error is not None
    assert "refused the recipient gone@example.org (550 5.1.1" in outcome.error
    assert mailbox.envelopes == []


async def test_one_refused_recipient_of_several_still_delivers_to_the_others_once(
    port: int, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    mailbox.refuse.add("gone@example.org")
    outcome = await transport(port).send(delivery("mailto:ops@example.org,gone@example.org"))

    # Delivered: a retry would only mail ops@ again.
    assert outcome.ok
    assert [e.rcpt_tos for e in mailbox.envelopes] == [["ops@example.org"]]
    assert "gone@example.org" in caplog.text


async def test_a_silent_server_fails_within_the_timeout(port: int) -> None:
    async with raw_server(port, b""):
        started = time.monotonic()
        outcome = await transport(port).send(delivery("mailto:ops@example.org", timeout=0.5))
        took = time.monotonic() - started

    assert not outcome.ok and outcome.status_code is None
    assert outcome.error is not None
    assert outcome.error.startswith(f"no answer from the SMTP server 127.0.0.1:{port} within 0.5 s")
    assert "HERALD_SMTP_TLS" in outcome.error
    assert 0.4 < took < 1.5


@pytest.fixture
def guarded(port: int) -> Iterator[Mailbox]:
    options = {"authenticator": check_password, "auth_require_tls": False, "auth_required": True}
    with smtp_server(port, **options) as box:
        yield box


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_login(port: int, guarded: Mailbox) -> None:
    outcome = await transport(port, username="herald", password="right").send(
        delivery("mailto:ops@example.org")
    )

    assert outcome.ok and len(guarded.envelopes) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_a_wrong_password_says_login_failed_without_the_password(
    port: int, guarded: Mailbox
) -> None:
    outcome = await transport(port, username="herald", password="hunter2").send(
        delivery("mailto:ops@example.org")
    )

    assert not outcome.ok and outcome.status_code == 535
    assert outcome.error is not None
    assert "login to the SMTP server" in outcome.error and "HERALD_SMTP_PASSWORD" in outcome.error
    assert "hunter2" not in outcome.error
    assert guarded.envelopes == []


async def test_empty_content_names_the_events_and_the_events_call(
    port: int, mailbox: Mailbox
) -> None:
    body = notification([5, 6, 7], focus=False)
    assert (await transport(port).send(delivery("mailto:ops@example.org", body=body))).ok

    [message] = mailbox.messages()
    assert message["Subject"] == "Herald: 3 events for Subscription/abc"
    text, attachment = parts(message)
    assert "Events 5, 6, 7." in text
    assert f"{BASE}/Subscription/abc/$events?eventsSinceNumber=5&eventsUntilNumber=7" in text
    assert attachment.get_content() == body


async def test_a_notification_without_body_is_a_short_text(port: int, mailbox: Mailbox) -> None:
    outcome = await transport(port).send(
        delivery("mailto:ops@example.org", body=None, content_type=None)
    )

    assert outcome.ok
    [message] = mailbox.messages()
    assert message["Subject"] == "Herald: a change for Subscription/abc"
    assert message.get_content_type() == "text/plain"
    assert "Subscription/abc reports a change" in message.get_content()


@pytest.mark.parametrize(
    ("kind", "subject", "words"),
    [
        ("handshake", "Herald: subscription handshake for Subscription/abc", "handshake"),
        ("heartbeat", "Herald: heartbeat for Subscription/abc", "nothing new"),
    ],
)
async def test_handshake_and_heartbeat(
    port: int, mailbox: Mailbox, kind: str, subject: str, words: str
) -> None:
    status = {"resourceType": "SubscriptionStatus", "type": kind}
    body = orjson.dumps({"resourceType": "Bundle", "entry": [{"resource": status}]})
    assert (await transport(port).send(delivery("mailto:ops@example.org", kind=kind, body=body))).ok

    [message] = mailbox.messages()
    assert message["Subject"] == subject
    text, attachment = parts(message)
    assert words in text
    assert attachment.get_filename() == f"notification-{kind}.json"


async def test_starttls_the_server_does_not_offer_fails_and_names_the_settings(
    port: int, mailbox: Mailbox
) -> None:
    outcome = await transport(port, starttls=True).send(delivery("mailto:ops@example.org"))

    assert not outcome.ok and outcome.error is not None
    assert "STARTTLS extension not supported" in outcome.error
    assert "HERALD_SMTP_STARTTLS" in outcome.error
    assert mailbox.envelopes == []


async def test_tls_to_a_plain_server_fails_and_names_the_settings(port: int) -> None:
    async with raw_server(port, b"220 plain SMTP here\r\n"):
        outcome = await transport(port, tls=True).send(delivery("mailto:ops@example.org"))

    assert not outcome.ok and outcome.error is not None
    assert f"TLS with the SMTP server 127.0.0.1:{port} failed" in outcome.error
    assert "HERALD_SMTP_TLS" in outcome.error


@pytest.mark.parametrize("endpoint", ["mailto:", "mailto:?to=x@example.org", "mailto:nobody"])
async def test_an_endpoint_without_address_fails_without_raising(endpoint: str) -> None:
    outcome = await transport(free_port()).send(delivery(endpoint))

    assert not outcome.ok and outcome.error is not None
    assert "names no email address" in outcome.error


def test_starttls_and_tls_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="not both"):
        SmtpConfig(host="smtp.example.org", sender="h@example.org", starttls=True, tls=True)
    assert "s3cret" not in repr(
        SmtpConfig(host="smtp.example.org", sender="h@example.org", password="s3cret")
    )


async def test_the_recipients_allow_list_is_checked_at_every_send(
    port: int, mailbox: Mailbox
) -> None:
    """A Subscription stored before the list was narrowed fails delivery, saying why, and
    mails nobody; an allowed recipient still gets its mail."""
    config = SmtpConfig(host="127.0.0.1", port=port, sender="herald@example.org")
    allowed = Recipients.parse("@example.org", required=True)
    hook = EmailTransport(config, clock=FrozenClock(NOW), recipients=allowed)

    refused = await hook.send(delivery("mailto:someone@elsewhere.net"))
    assert not refused.ok
    assert refused.error is not None and "HERALD_EMAIL_ALLOWLIST" in refused.error
    assert "someone@elsewhere.net" in refused.error
    assert mailbox.envelopes == []
    assert (await hook.send(delivery("mailto:ops@example.org"))).ok
    assert [e.rcpt_tos for e in mailbox.envelopes] == [["ops@example.org"]]
