"""The mail one notification becomes: headers, the body (plain text or HTML) and the attachment.

The form follows the subscription's `channel.payload` (the Backport IG's email payloads, read
by `subscriptions/payload.py` and carried on the `Delivery`):

- `text/plain`: a plain-text mail;
- `text/html`: an HTML document with the same words, and the plain text as its alternative
  (`multipart/alternative`), so a mail client that shows no HTML still reads it;
- `;attach=application/fhir+json`: the notification (the Bundle, or a classic R4
  subscription's resource) attached as `application/fhir+json`, byte for byte as the server
  made it (so the content level applies to it); without `attach` there is no attachment.
  A JSON payload on the email channel (and an email channel without payload) is
  `text/plain;attach=application/fhir+json`.

What the body says (read from the notification's status: the R4B SubscriptionStatus, or the
IG's R4 Parameters form): the subscription, the notification type and, for event notifications, each
event's number and the resource it is about (its reference only, never its content). A
subscription with `empty` content names no resources: the body gives the `$events` call that
tells what changed. Everything taken from the notification is escaped in the HTML.

`Message-ID` and `Herald-Idempotency-Key` stay the same on every retry of the same
notification, so a mail client or a program reading the mailbox can drop duplicates.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any

import orjson

from channels.transport import Delivery
from fhirstore.wire import EMAIL_IDEMPOTENCY_HEADER as IDEMPOTENCY_HEADER

_SUBJECTS = {"handshake": "subscription handshake", "heartbeat": "heartbeat"}
_LINKABLE = ("https://", "http://")


@dataclass(frozen=True, slots=True)
class _Summary:
    """What the body says, as paragraphs; `events` (lines naming each event) follow the first."""

    opening: str
    events: tuple[str, ...]
    notes: tuple[str, ...]
    signature: str


def mail_message(
    delivery: Delivery, recipients: list[str], *, sender: str, now: datetime
) -> EmailMessage:
    """The mail for `delivery` to `recipients`, in the form the subscription asked for."""
    status = _status_of(delivery.body)
    events = _events(status) if status is not None else []
    attach = delivery.attach and delivery.body is not None
    name = _attachment_name(delivery, events) if attach else None
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject = _subject(delivery, status, events)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(delivery.idempotency_key)
    message[IDEMPOTENCY_HEADER] = delivery.idempotency_key
    summary = _summary(delivery, status, events, name)
    message.set_content(_text(summary))
    if delivery.mail_body == "text/html":
        message.add_alternative(_html(subject, summary), subtype="html")
    if attach and delivery.body is not None:
        message.add_attachment(
            delivery.body, maintype="application", subtype="fhir+json", filename=name
        )
    return message


def message_id(idempotency_key: str) -> str:
    """The `Message-ID` of a notification's mail: the same for every retry of it."""
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@herald>"


def _status_of(body: bytes | None) -> dict[str, Any] | None:
    """The SubscriptionStatus heading a notification Bundle; None for any other body."""
    if not body:
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        return None
    entries = document.get("entry")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return None
    resource = entries[0].get("resource")
    if not isinstance(resource, dict):
        return None
    if resource.get("resourceType") == "SubscriptionStatus":
        return resource
    if resource.get("resourceType") == "Parameters":
        return _status_of_parameters(resource)
    return None


def _status_of_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The Backport IG's R4 status (a Parameters resource) read as the R4B SubscriptionStatus
    elements the mail names: `subscription`, `topic`, `type`, `notificationEvent`."""
    status: dict[str, Any] = {"notificationEvent": []}
    for parameter in _list(parameters.get("parameter")):
        name = parameter.get("name")
        if name == "subscription":
            status["subscription"] = parameter.get("valueReference")
        elif name in ("topic", "type"):
            status[name] = parameter.get("valueCanonical", parameter.get("valueCode"))
        elif name == "notification-event":
            parts = {part.get("name"): part for part in _list(parameter.get("part"))}
            event = {"eventNumber": parts.get("event-number", {}).get("valueString", "?")}
            if "focus" in parts:
                event["focus"] = parts["focus"].get("valueReference")
            status["notificationEvent"].append(event)
    return status


def _list(value: object) -> list[dict[str, Any]]:
    """The objects in `value`, when it is a list (anything else in it left out)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _events(status: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(eventNumber, focus reference or None) of each `notificationEvent`."""
    found: list[tuple[str, str | None]] = []
    events = status.get("notificationEvent")
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict):
            continue
        focus = event.get("focus")
        reference = focus.get("reference") if isinstance(focus, dict) else None
        found.append((str(event.get("eventNumber", "?")), _text_or_none(reference)))
    return found


def _subject(
    delivery: Delivery, status: dict[str, Any] | None, events: list[tuple[str, str | None]]
) -> str:
    subscription = f"Subscription/{delivery.subscription_id}"
    if delivery.kind == "event-notification":
        if status is None:
            return f"Herald: a change for {subscription}"
        count = len(events)
        return f"Herald: {count} event{'' if count == 1 else 's'} for {subscription}"
    return f"Herald: {_SUBJECTS.get(delivery.kind, delivery.kind)} for {subscription}"


def _summary(
    delivery: Delivery,
    status: dict[str, Any] | None,
    events: list[tuple[str, str | None]],
    attachment: str | None,
) -> _Summary:
    subscription = f"Subscription/{delivery.subscription_id}"
    if status is not None:
        subscription_ref = status.get("subscription")
        if isinstance(subscription_ref, dict):
            subscription = _text_or_none(subscription_ref.get("reference")) or subscription
    lines: tuple[str, ...] = ()
    notes: list[str] = []
    if any(focus for _, focus in events):
        lines = tuple(f"Event {number}: {focus or '(no focus)'}" for number, focus in events)
    elif events:
        numbers = [int(n) for n, _ in events if n.isdigit()]
        query = (
            f"?eventsSinceNumber={min(numbers)}&eventsUntilNumber={max(numbers)}" if numbers else ""
        )
        notes.append(
            f"Event{'s' if len(events) > 1 else ''} {', '.join(n for n, _ in events)}. "
            "This subscription's notifications do not say what changed (content 'empty'); "
            f"ask the server: GET {subscription}/$events{query}"
        )
    if status is not None and _text_or_none(status.get("topic")):
        notes.append(f"Topic: {status['topic']}")
    if attachment is not None:
        notes.append(f"The notification is attached as {attachment} (application/fhir+json).")
    opening = _opening(delivery, status, events, subscription)
    return _Summary(opening, lines, tuple(notes), f"Sent by Herald for {subscription}.")


def _opening(
    delivery: Delivery,
    status: dict[str, Any] | None,
    events: list[tuple[str, str | None]],
    subscription: str,
) -> str:
    if delivery.kind == "handshake":
        return f"{subscription} will send its notifications to this address (handshake)."
    if delivery.kind == "heartbeat":
        return f"{subscription} is active; there is nothing new to report (heartbeat)."
    if delivery.kind != "event-notification":
        return f"A {delivery.kind} notification of {subscription}."
    if status is None:
        return f"{subscription} reports a change (a notification that does not number events)."
    count = len(events)
    return f"{subscription} has {count} new event{'' if count == 1 else 's'}."


def _text(summary: _Summary) -> str:
    paragraphs = [summary.opening]
    if summary.events:
        paragraphs.append("\n".join(summary.events))
    paragraphs += [*summary.notes, f"-- \n{summary.signature}"]
    return "\n\n".join(paragraphs) + "\n"


def _html(subject: str, summary: _Summary) -> str:
    """The summary as an HTML document; every word taken from the notification is escaped."""
    body = [f"<p>{_linked(summary.opening)}</p>"]
    if summary.events:
        items = "".join(f"<li>{_linked(line)}</li>" for line in summary.events)
        body.append(f"<ul>{items}</ul>")
    body += [f"<p>{_linked(note)}</p>" for note in summary.notes]
    body.append(f"<hr>\n<p><small>{_linked(summary.signature)}</small></p>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(subject)}</title>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _linked(text: str) -> str:
    """`text` escaped for HTML, with each http(s) URL in it made a link."""
    words = []
    for word in text.split(" "):
        bare = word.rstrip(".,;")
        if bare.startswith(_LINKABLE):
            link = html.escape(bare, quote=True)
            words.append(f'<a href="{link}">{link}</a>{html.escape(word[len(bare) :])}')
        else:
            words.append(html.escape(word))
    return " ".join(words)


def _attachment_name(delivery: Delivery, events: list[tuple[str, str | None]]) -> str:
    if events and events[0][0].isdigit():
        return f"notification-{events[0][0]}.json"
    return f"notification-{delivery.kind}.json"


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
