"""The `Transport` port: what every channel's transport takes and returns (one notification to
deliver, how it went).

The delivery core (`channels/delivery.py`) builds a `Delivery` for each notification (ordering,
numbering, retries and status stay in the core); a transport only moves the bytes: REST hook
(`resthook.py`), email (`email.py`), Kafka queue (`queue.py`) and WebSocket (`websocket/`).

The contract every transport keeps (held by `tests/channels/test_transport_contract.py`):

- `send` never raises for anything the endpoint, the network or the peer does; only
  cancellation propagates. It returns an `Outcome`.
- `Outcome.ok` is true exactly when the peer took the notification; then `error` and `failure`
  are None. Otherwise `error` says what went wrong in words a person can act on, and `failure`
  says what kind of failure it was (`Failure`), so a caller can tell one that may pass by
  itself from one that needs someone to change something (`Failure.permanent`).
- `send` is bounded in time: by `Delivery.timeout` (REST hook, email, Kafka queue; running
  out of it is `Failure.TIMEOUT`), by the hub's send timeout per socket (WebSocket).
- `aclose` releases what the transport holds; call it once, when done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from subscriptions import NotificationType


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification to send: where, what, and how long to wait for it to be taken."""

    subscription_id: str
    kind: NotificationType  # handshake, heartbeat, event-notification
    endpoint: str  # as the channel gives it: https://..., mailto:..., kafka:<topic>
    body: bytes | None  # None: a classic R4 notification without payload
    content_type: str | None
    headers: tuple[tuple[str, str], ...]  # Subscription.channel.header, split into name/value
    idempotency_key: str  # the same on every retry of the same notification
    secret: str | None  # signing secret (REST hook)
    timeout: float  # seconds for the whole delivery
    # A WebSocket handshake from a delivery step: only for sockets whose last handshake for
    # the subscription went out before this instant (those bound since were greeted by their
    # bind). None for everything else.
    greeted_before: datetime | None = None
    # Email only (`channels/mail.py`): the mail body's type, text/plain or text/html, and
    # whether the notification is attached (the IG's `;attach=application/fhir+json`).
    mail_body: str = "text/plain"
    attach: bool = True


class Failure(StrEnum):
    """What kind of failure a transport reports, and whether trying again can help."""

    # Herald would not send it: the endpoint is malformed or not allowed here.
    BLOCKED = "blocked"
    # No connection: the host does not resolve, the connection is refused or breaks off, no
    # broker answers, no WebSocket is bound.
    UNREACHABLE = "unreachable"
    # No answer within the delivery's timeout.
    TIMEOUT = "timeout"
    # The peer refused it for good: HTTP 3xx or 4xx (but 408 and 429), SMTP 5xx, the broker's
    # authorization or message size limit.
    REJECTED = "rejected"
    # The peer answered "not now": HTTP 5xx, 408 or 429, SMTP 4xx, any other broker error.
    UNAVAILABLE = "unavailable"

    @property
    def permanent(self) -> bool:
        """True when sending the same again fails the same way until someone changes
        something (the subscription's endpoint, the receiver, the configuration)."""
        return self in (Failure.BLOCKED, Failure.REJECTED)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a delivery went: `ok` when the peer took it, else `error` says what to fix and
    `failure` what kind of failure it was."""

    ok: bool
    status_code: int | None  # an HTTP or SMTP reply code, when there was one
    error: str | None  # None when ok
    elapsed: float  # seconds
    failure: Failure | None = None  # None when ok; every transport sets it on a failure


class Transport(Protocol):
    async def send(self, delivery: Delivery) -> Outcome:
        """Deliver `delivery` and say how it went; never raises but for cancellation."""
        ...

    async def aclose(self) -> None:
        """Release connections and background work; the transport is not used after it."""
        ...
