"""`channel.payload` read into a `Payload`: the JSON forms with `fhirVersion`, the Backport IG's
mail forms for the email channel, and the 422s that say what is accepted."""

from __future__ import annotations

import pytest

from fhirstore.errors import Unprocessable
from subscriptions.channel import ChannelSupport, parse_channel
from subscriptions.payload import Payload, parse_payload

PATH = "Subscription.channel.payload"
EMAIL = ChannelSupport(frozenset({"rest-hook", "email"}))


def refusal(mime: str, *, email: bool) -> str:
    with pytest.raises(Unprocessable) as caught:
        parse_payload(mime, PATH, email=email)
    assert caught.value.expression == [PATH]
    return caught.value.diagnostics


@pytest.mark.parametrize(
    ("mime", "expected"),
    [
        ("text/plain", Payload("text/plain", mail_body="text/plain", attach=False)),
        ("TEXT/HTML", Payload("text/html", mail_body="text/html", attach=False)),
        (
            "text/plain;attach=application/fhir+json",
            Payload("text/plain", mail_body="text/plain", attach=True),
        ),
        (
            'text/html; attach="application/fhir+json"; charset=UTF-8',
            Payload("text/html", mail_body="text/html", attach=True),
        ),
        (
            "text/html;attach=application/fhir+json;fhirVersion=4.0",
            Payload("text/html", "4.0", mail_body="text/html", attach=True),
        ),
        # A JSON payload on email keeps the mail it always gave: text with the Bundle attached.
        (
            "application/fhir+json",
            Payload("application/fhir+json", mail_body="text/plain", attach=True),
        ),
        (
            "application/json;fhirVersion=4.0",
            Payload("application/json", "4.0", mail_body="text/plain", attach=True),
        ),
    ],
)
def test_the_mail_forms_of_the_email_channel(mime: str, expected: Payload) -> None:
    assert parse_payload(mime, PATH, email=True) == expected


@pytest.mark.parametrize(
    ("mime", "expected"),
    [
        ("application/fhir+json", Payload("application/fhir+json")),
        ("application/fhir+json; fhirVersion=4.0", Payload("application/fhir+json", "4.0")),
        ('application/json;fhirversion="4.3"', Payload("application/json", "4.3")),
    ],
)
def test_other_channels_carry_json(mime: str, expected: Payload) -> None:
    assert parse_payload(mime, PATH, email=False) == expected


@pytest.mark.parametrize(
    ("mime", "email", "words"),
    [
        ("text/plain", False, "expects application/fhir+json or application/json, with an"),
        ("text/html;attach=application/fhir+json", False, "(got 'text/html;attach="),
        ("text/csv", True, "or text/plain or text/html with an optional ;attach="),
        ("text/plain;attach=application/xml", True, "attach must be application/fhir+json"),
        ("application/fhir+json;attach=application/fhir+json", True, "text/plain or text/html"),
        ("application/fhir+xml", True, "XML payloads are not supported"),
        ("application/fhir+json;fhirVersion=5.0", False, "fhirVersion must be 4.0 (R4) or 4.3"),
        ("text/plain;charset=latin-1", True, "only charset=utf-8 is supported"),
        ("text/plain;format=flowed", True, "unsupported parameter 'format'"),
        ("text/plain;attach", True, "parameters written name=value"),
        ("text/plain;attach=a;attach=b", True, "'attach' is given twice"),
    ],
)
def test_what_no_channel_carries_is_refused_saying_what_is_accepted(
    mime: str, email: bool, words: str
) -> None:
    assert words in refusal(mime, email=email)


def test_an_email_channel_defaults_to_empty_content_in_every_mail_form() -> None:
    for mime in ("text/plain", "text/html;attach=application/fhir+json", None):
        channel = {"type": "email", "endpoint": "mailto:care@example.org"}
        if mime is not None:
            channel["payload"] = mime
        parsed = parse_channel({"channel": channel}, classic=False, support=EMAIL)
        assert parsed.content == "empty", mime
    # Without payload: the text mail with the notification attached, as before the IG's forms.
    assert (parsed.mail_body, parsed.attach) == ("text/plain", True)
