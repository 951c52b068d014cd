"""Parse `Subscription.channel` (R4B, with the Backport IG extensions) into a `Channel`.

Channel types: `rest-hook`, `websocket` (the endpoint is ignored: the client connects to
Herald), `email` (`mailto:` endpoint) and Herald's Kafka queue: `type` `message` with the
`backport-channel-type` extension on `_type` set to `HERALD_CHANNEL_TYPES|kafka` and the endpoint
`kafka:<topic>`. Plain `message` (FHIR messaging) and `sms` are refused. Whether this server
can serve a channel (an SMTP server configured, a queue topic the administrator allows) is
`ChannelSupport.check`'s to say.

Payload content: for a topic-based subscription the `backport-payload-content` extension on
`_payload` decides; when it is absent the content is `id-only` if a payload MIME type is given
and `empty` otherwise (for email always `empty`, so that no clinical content is mailed by
accident). A classic R4 subscription sends the resource itself when it has a
payload (`full-resource`) and nothing otherwise (`empty`); on the email channel a `text/plain`
or `text/html` payload without `attach` mails no resource, so it is `empty` too. The payload
MIME type is read by `subscriptions/payload.py`: JSON with an optional `fhirVersion`, and the
IG's mail forms (`text/plain;attach=application/fhir+json`) for email.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from fhirstore.wire import (
    CHANNEL_TYPE,
    CHANNEL_TYPE_SYSTEMS,
    HEARTBEAT_PERIOD,
    HERALD_CHANNEL_TYPES,
    MAX_COUNT,
    PAYLOAD_CONTENT,
    TIMEOUT,
)
from subscriptions.elements import (
    Json,
    child,
    extension_value,
    invalid,
    single_extension,
    string,
    strings,
)
from subscriptions.model import Channel, ChannelType, ContentLevel
from subscriptions.payload import Payload, parse_payload

PATH = "Subscription.channel"
CHANNEL_TYPES = frozenset({"rest-hook", "websocket", "email", "message"})  # R4B codes
R4_CHANNEL_TYPES = CHANNEL_TYPES | {"sms"}
KAFKA = "kafka"  # in HERALD_CHANNEL_TYPES
CONTENT_LEVELS = frozenset({"empty", "id-only", "full-resource"})
MAX_HEARTBEAT_SECONDS = 86_400
MAX_TIMEOUT_SECONDS = 300
MAX_EVENTS_PER_NOTIFICATION = 1_000
# extension url -> (value element, lowest, highest)
_LIMITS = {
    HEARTBEAT_PERIOD: ("valueUnsignedInt", 1, MAX_HEARTBEAT_SECONDS),
    TIMEOUT: ("valueUnsignedInt", 1, MAX_TIMEOUT_SECONDS),
    MAX_COUNT: ("valuePositiveInt", 1, MAX_EVENTS_PER_NOTIFICATION),
}
_MAILTO = re.compile(r"mailto:[^@\s,?]+@[^@\s,?]+(,[^@\s,?]+@[^@\s,?]+)*")
_DEFAULT_PAYLOAD = Payload("application/fhir+json")
_DEFAULT_MAIL = Payload("application/fhir+json", mail_body="text/plain", attach=True)
_HEADER = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*:\s*([^\r\n]*)")


ChannelCheck = Callable[[Channel], str | None]


@dataclass(frozen=True, slots=True)
class ChannelSupport:
    """The channel types this server delivers, and `check`: what is wrong with one channel on
    this server's configuration (e.g. no SMTP server, a queue topic not allowed), or None."""

    types: frozenset[str] = frozenset({"rest-hook"})
    check: ChannelCheck | None = None


REST_HOOK_ONLY = ChannelSupport()


def parse_channel(resource: dict[str, Any], *, classic: bool, support: ChannelSupport) -> Channel:
    channel = child(resource, "channel", "Subscription")
    if channel is None:
        raise invalid(PATH, "is required")
    kind = _channel_type(channel, support.types)
    if classic and kind == "websocket":
        raise invalid(
            f"{PATH}.type",
            "the R4 websocket protocol (bind/ping) is not supported: use a topic-based "
            "Subscription (Backport IG) for the websocket channel",
        )
    payload, parsed_payload, content = _payload(channel, classic, email=kind == "email")
    parsed = Channel(
        type=kind,
        endpoint=_endpoint(channel, kind),
        payload=payload,
        content=content,
        fhir_version=parsed_payload.fhir_version,
        mail_body=parsed_payload.mail_body,
        attach=parsed_payload.attach,
        headers=_headers(channel),
        heartbeat_period=_limit(channel, HEARTBEAT_PERIOD),
        timeout=_limit(channel, TIMEOUT),
        max_count=_limit(channel, MAX_COUNT) or 1,
    )
    problem = support.check(parsed) if support.check is not None else None
    if problem is not None:
        raise invalid(PATH, problem)
    return parsed


def _channel_type(channel: Json, supported: frozenset[str]) -> ChannelType:
    path = f"{PATH}.type"
    declared = string(channel, "type", PATH)
    if declared is not None and declared not in R4_CHANNEL_TYPES:
        raise invalid(path, f"unknown channel type {declared!r}")
    kind = _extended_type(channel, path) or declared
    if kind is None:
        raise invalid(path, "is required")
    if kind == KAFKA and declared not in (None, "message"):
        raise invalid(path, f"a kafka channel is of type message (got {declared!r})")
    if kind == "message":
        raise invalid(
            path,
            "FHIR messaging is not supported; for a Kafka queue set the backport-channel-type"
            f" extension on _type to {HERALD_CHANNEL_TYPES}|{KAFKA}",
        )
    if kind not in supported:
        offered = ", ".join(sorted(supported))
        raise invalid(path, f"channel type {kind} is not supported; use one of: {offered}")
    return cast(ChannelType, kind)


def _extended_type(channel: Json, path: str) -> str | None:
    """The code of a `backport-channel-type` Coding on `_type`, if any (must be known)."""
    found = single_extension(child(channel, "_type", PATH), CHANNEL_TYPE, path)
    if found is None:
        return None
    ext_path, extension = found
    coding = extension_value(extension, "valueCoding", ext_path)
    if not isinstance(coding, dict):
        raise invalid(ext_path, "valueCoding must be a Coding")
    system, code = coding.get("system"), coding.get("code")
    if system == HERALD_CHANNEL_TYPES and code == KAFKA:
        return KAFKA
    if code not in CHANNEL_TYPES or (system is not None and system not in CHANNEL_TYPE_SYSTEMS):
        raise invalid(
            ext_path,
            f"unknown channel type {system or ''}|{code or ''}; Herald knows"
            f" {', '.join(sorted(CHANNEL_TYPES))} and {HERALD_CHANNEL_TYPES}|{KAFKA}",
        )
    return cast(str, code)


def _endpoint(channel: Json, kind: str) -> str:
    path = f"{PATH}.endpoint"
    endpoint = string(channel, "endpoint", PATH)
    if kind == "websocket":
        return ""  # the client connects to Herald; an endpoint is ignored
    if endpoint is None:
        raise invalid(path, f"is required for a {kind} channel")
    if kind == "rest-hook":
        return _http_url(endpoint.strip(), path)
    if kind == "email" and not _MAILTO.fullmatch(endpoint.strip()):
        raise invalid(path, f"an email channel needs mailto:address (got {endpoint!r})")
    if kind == KAFKA and not endpoint.strip().startswith("kafka:"):
        raise invalid(path, f"a kafka channel needs kafka:<topic> (got {endpoint!r})")
    return endpoint.strip()


def _http_url(endpoint: str, path: str) -> str:
    try:
        parts = urlsplit(endpoint)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        valid = valid and (parts.port is None or parts.port > 0)  # a bad port raises
    except ValueError:
        valid = False
    if not valid or re.search(r"\s", endpoint):
        raise invalid(path, f"must be an absolute http(s) URL with a host (got {endpoint!r})")
    return endpoint


def _payload(
    channel: Json, classic: bool, *, email: bool
) -> tuple[str | None, Payload, ContentLevel]:
    path = f"{PATH}.payload"
    mime = string(channel, "payload", PATH)
    parsed = parse_payload(mime, path, email=email) if mime is not None else _DEFAULT_PAYLOAD
    if mime is None and email:
        parsed = _DEFAULT_MAIL
    if classic:
        # A mail without attachment carries nothing of the resource: as without payload.
        sends_resource = mime is not None and (parsed.mail_body is None or parsed.attach)
        return mime, parsed, "full-resource" if sends_resource else "empty"
    content = _content(channel, path)
    if content is None:
        return mime, parsed, "id-only" if mime is not None and not email else "empty"
    if mime is None and content != "empty":
        mime = "application/fhir+json"
    return mime, parsed, content


def _content(channel: Json, path: str) -> ContentLevel | None:
    found = single_extension(child(channel, "_payload", PATH), PAYLOAD_CONTENT, path)
    if found is None:
        return None
    ext_path, extension = found
    code = extension_value(extension, "valueCode", ext_path)
    if code not in CONTENT_LEVELS:
        raise invalid(ext_path, f"expects empty, id-only or full-resource (got {code!r})")
    return cast(ContentLevel, code)


def _headers(channel: Json) -> tuple[tuple[str, str], ...]:
    headers = []
    for path, text in strings(channel, "header", PATH):
        match = _HEADER.fullmatch(text.strip())
        if match is None:
            raise invalid(path, f"expects 'Name: value' (got {text!r})")
        if not match.group(2).isascii() or not match.group(2).isprintable():
            raise invalid(path, "header values must be printable ASCII (HTTP cannot carry more)")
        headers.append((match.group(1), match.group(2).strip()))
    return tuple(headers)


def _limit(channel: Json, url: str) -> int | None:
    found = single_extension(channel, url, PATH)
    if found is None:
        return None
    ext_path, extension = found
    value_key, lowest, highest = _LIMITS[url]
    value = extension_value(extension, value_key, ext_path)
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise invalid(
            f"{ext_path}.{value_key}",
            f"expects a whole number from {lowest} to {highest} (got {value!r})",
        )
    return value
