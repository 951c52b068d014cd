"""What the audit trail (`fhirstore.access.audit`) records of a delivery attempt: the
Subscription and its owner, the channel, the notification type and the eventNumbers it carried,
where it went, how it went, and the owner's grants that let it carry what it did. Never the body.

Where it went: a REST hook's origin (`https://host:port`) only, as receivers often put a key in
the URL's path or query; an email's `mailto:` recipients; a Kafka topic. Why a REST hook
attempt failed: the status when the receiver answered (`HTTP 503`), not its answer, which may
echo what it was sent; otherwise the transport's message, with every URL in it cut to its origin.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from channels.attempt import Attempt
from fhirstore.access import ANONYMOUS, DELIVERED, FAILED, Access, AuditEntry, AuditTrail, Principal
from subscriptions import RecordedEvent

_URL = re.compile(r"(\b[a-z][a-z0-9+.-]*://\S+?)([:,;.)]*)(?=\s|$)", re.IGNORECASE)
_REASON = 200  # characters of a reason kept


def attempt_recorder(trail: AuditTrail) -> Callable[[Attempt], None]:
    """A `DeliveryPolicy.record_attempt` that records into `trail`."""

    def record(attempt: Attempt) -> None:
        trail.record(attempt_entry(attempt))

    return record


def attempt_entry(attempt: Attempt) -> AuditEntry:
    spec, events, outcome = attempt.spec, attempt.events, attempt.outcome
    # No owner: created while authentication was off, delivered unnarrowed, like ANONYMOUS.
    owner = spec.owner or ANONYMOUS
    channel = spec.channel.type
    return AuditEntry(
        kind="delivery",
        interaction=channel,
        outcome=DELIVERED if outcome.ok else FAILED,
        reason=None if outcome.ok else _reason(channel, outcome.status_code, outcome.error),
        subject=owner.subject,
        client=owner.client,
        patient=owner.patient,
        granted_by=_grants(owner, events),
        res_type="Subscription",
        res_id=spec.id,
        notification=attempt.kind,
        first_event=events[0].event_number if events else None,
        last_event=events[-1].event_number if events else None,
        endpoint=_where(channel, spec.channel.endpoint),
    )


def _grants(owner: Principal, events: Sequence[RecordedEvent]) -> str | None:
    """What lets the owner read its Subscription and each type the notification is about."""
    access = Access(owner)
    types = dict.fromkeys(["Subscription", *(e.res_type for e in events)])
    reaches = (access.may(t, "r") for t in types)
    return " ".join(dict.fromkeys(r.grant for r in reaches if r is not None)) or None


def _where(channel: str, endpoint: str | None) -> str | None:
    if not endpoint or channel == "websocket":
        return None
    if channel == "rest-hook":
        return _origin(endpoint)
    if channel == "email":
        return endpoint.partition("?")[0]  # the recipients, without subject or body fields
    return endpoint


def _reason(channel: str, status_code: int | None, error: str | None) -> str:
    if channel == "rest-hook" and status_code is not None:
        return f"HTTP {status_code}"
    text = _URL.sub(lambda m: (_origin(m[1]) or "the endpoint") + m[2], error or "failed")
    return text[:_REASON]


def _origin(url: str) -> str | None:
    """`scheme://host[:port]` of `url`, without user info, path, query or fragment."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.hostname}{port}" if parts.hostname else None
