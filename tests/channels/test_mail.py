"""The forms of a notification mail (the Backport IG's email payloads), sent through a real SMTP
server (aiosmtpd) on 127.0.0.1 and read back with the `email` package."""

from __future__ import annotations

from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any

import orjson

from channels.mail import message_id
from tests.channels.test_email import BASE, BODY, SECRET_FINDING, delivery, notification, transport
from tests.support.smtp import Mailbox

TO = "mailto:ops@example.org"


async def received(
    port: int, mailbox: Mailbox, body: bytes | None = BODY, **form: object
) -> EmailMessage:
    outcome = await transport(port).send(delivery(TO, body=body, **form))
    assert outcome.ok, outcome.error
    [message] = mailbox.messages()
    return message


class Document(HTMLParser):
    """The tags and the text of an HTML document, as a browser would read them."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.words: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [value or "" for name, value in attrs if tag == "a" and name == "href"]

    def handle_data(self, data: str) -> None:
        self.words.append(data)

    @property
    def text(self) -> str:
        return "".join(self.words)


def html_of(message: EmailMessage) -> Document:
    part = message.get_body(preferencelist=("html",))
    assert part is not None and part.get_content_type() == "text/html"
    markup = part.get_content()
    assert markup.startswith("<!DOCTYPE html>")
    return Document(markup)


def plain_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None and part.get_content_type() == "text/plain"
    return str(part.get_content())


def attached_bundle(message: EmailMessage) -> bytes:
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/fhir+json"
    assert attachment.get_filename() == "notification-5.json"
    return bytes(attachment.get_content())


async def test_text_without_attach_is_a_plain_mail_with_no_attachment(
    port: int, mailbox: Mailbox
) -> None:
    message = await received(port, mailbox, mail_body="text/plain", attach=False)

    assert message.get_content_type() == "text/plain"
    assert list(message.iter_attachments()) == []
    text = message.get_content()
    assert f"Event 5: {BASE}/Observation/o5/_history/1" in text
    assert "attached" not in text
    assert SECRET_FINDING not in text
    assert message["Message-ID"] == message_id("abc:5")


async def test_text_with_attach_carries_the_bundle(port: int, mailbox: Mailbox) -> None:
    message = await received(port, mailbox, mail_body="text/plain", attach=True)

    assert message.get_content_type() == "multipart/mixed"
    assert "attached as notification-5.json" in plain_of(message)
    assert attached_bundle(message) == BODY


async def test_html_without_attach_is_an_html_document_with_a_text_alternative(
    port: int, mailbox: Mailbox
) -> None:
    message = await received(port, mailbox, mail_body="text/html", attach=False)

    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert list(message.iter_attachments()) == []
    document = html_of(message)
    assert {"html", "head", "title", "body", "ul", "li"} <= set(document.tags)
    assert f"Event 6: {BASE}/Observation/o6/_history/1" in document.text
    assert f"{BASE}/Observation/o6/_history/1" in document.links
    assert f"Event 6: {BASE}/Observation/o6/_history/1" in plain_of(message)
    assert SECRET_FINDING not in document.text
    assert "attached" not in document.text


async def test_html_with_attach_carries_the_bundle_beside_both_bodies(
    port: int, mailbox: Mailbox
) -> None:
    message = await received(port, mailbox, mail_body="text/html", attach=True)

    assert message.get_content_type() == "multipart/mixed"
    alternative, attachment = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert attachment.get_content_type() == "application/fhir+json"
    assert attached_bundle(message) == BODY
    assert "attached as notification-5.json" in html_of(message).text


async def test_everything_from_the_notification_is_escaped_in_the_html(
    port: int, mailbox: Mailbox
) -> None:
    hostile = '<script>alert("x")</script>'
    bundle = orjson.loads(notification([5]))
    status = bundle["entry"][0]["resource"]
    status["topic"] = f"http://example.org/{hostile}"
    status["notificationEvent"][0]["focus"]["reference"] = f'{BASE}/Observation/"><b>{hostile}'
    body = orjson.dumps(bundle)
    message = await received(
        port, mailbox, body=body, mail_body="text/html", attach=False, subscription_id="a<i>"
    )

    document = html_of(message)
    assert "script" not in document.tags and "b" not in document.tags and "i" not in document.tags
    assert hostile in document.text  # shown as text, not run
    assert f'{BASE}/Observation/"><b>{hostile}' in document.links


async def test_html_at_empty_content_names_no_resource_and_gives_the_events_call(
    port: int, mailbox: Mailbox
) -> None:
    body = notification([5, 6], focus=False)
    message = await received(port, mailbox, body=body, mail_body="text/html", attach=False)

    text = html_of(message).text
    assert "Events 5, 6." in text
    assert f"{BASE}/Subscription/abc/$events?eventsSinceNumber=5&eventsUntilNumber=6" in text
    assert "Observation" not in text
    assert "Observation" not in plain_of(message)


async def test_the_r4_status_form_is_read_for_the_body(port: int, mailbox: Mailbox) -> None:
    def event(number: int) -> dict[str, Any]:
        parts = [
            {"name": "event-number", "valueString": str(number)},
            {"name": "timestamp", "valueInstant": "2024-05-01T11:59:00Z"},
            {"name": "focus", "valueReference": {"reference": f"{BASE}/Observation/o{number}"}},
        ]
        return {"name": "notification-event", "part": parts}

    status = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": f"{BASE}/Subscription/abc"}},
            {"name": "topic", "valueCanonical": "http://example.org/topics/observations"},
            {"name": "status", "valueCode": "active"},
            {"name": "type", "valueCode": "event-notification"},
            event(5),
            event(6),
        ],
    }
    body = orjson.dumps(
        {"resourceType": "Bundle", "type": "history", "entry": [{"resource": status}]}
    )
    message = await received(port, mailbox, body=body, mail_body="text/html", attach=True)

    assert message["Subject"] == "Herald: 2 events for Subscription/abc"
    text = html_of(message).text
    assert f"Event 6: {BASE}/Observation/o6" in text
    assert "Topic: http://example.org/topics/observations" in text
    assert "notification-5.json" in plain_of(message)
