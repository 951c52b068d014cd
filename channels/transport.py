"""The `Transport` port: what every channel's transport takes and returns (one notification to
deliver, how it went).

The delivery core (`channels/delivery.py`) builds a `Delivery` for each notification (ordering,
numbering, retries and status stay in the core); a transport only moves the bytes: REST hook
(`resthook.py`), email (`email.py`), Kafka queue (`queue.py`) and WebSocket (`websocket/`).
A transport never raises for anything the network or the peer does: it returns an `Outcome`
whose `error` says what went wrong in words a person can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from subscriptions.model import NotificationType


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


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a delivery went: `ok` when the peer took it, else `error` says what to fix."""

    ok: bool
    status_code: int | None  # an HTTP or SMTP reply code, when there was one
    error: str | None  # None when ok
    elapsed: float  # seconds


class Transport(Protocol):
    async def send(self, delivery: Delivery) -> Outcome: ...

    async def aclose(self) -> None: ...
