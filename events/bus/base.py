"""The bus interface. Domain code registers handlers and publishes; it never knows the transport.

Contract shared by every implementation:
- `publish` returns only once every message is durably accepted (Kafka: acknowledged by the
  broker; in-process: handled by every subscribed group). Messages with the same key keep order.
- Each consumer group receives every message at least once, in key order. A handler that raises
  is retried with backoff; the bus never skips a message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Message], Awaitable[None]]
# Takes consecutive messages of one topic (in key order) at once, e.g. to write what they
# cause in one transaction; the whole batch is retried if it raises.
BatchHandler = Callable[[Sequence[Message]], Awaitable[None]]


class Bus(Protocol):
    def subscribe(self, topic: str, group: str, handler: Handler) -> None:
        """Register a handler for `topic` in consumer group `group` (before `start`)."""
        ...

    def subscribe_batch(self, topic: str, group: str, handler: BatchHandler) -> None:
        """Like `subscribe`, for a handler that takes several messages at a time."""
        ...

    def subscribe_broadcast(self, topic: str, handler: BatchHandler) -> None:
        """Every process gets every message published to `topic` while it runs (no consumer
        group, nothing committed, no retry): for pushing to what this process holds."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish and wait until every message is accepted."""
        ...


async def handle_with_retry(
    handler: Handler,
    message: Message,
    *,
    initial_backoff: float = 0.05,
    max_backoff: float = 5.0,
) -> None:
    """Run `handler` until it succeeds. Consumers are idempotent, so retrying is always safe."""

    async def batch_of_one(messages: Sequence[Message]) -> None:
        await handler(messages[0])

    await handle_batch_with_retry(
        batch_of_one, [message], initial_backoff=initial_backoff, max_backoff=max_backoff
    )


async def handle_batch_with_retry(
    handler: BatchHandler,
    messages: Sequence[Message],
    *,
    initial_backoff: float = 0.05,
    max_backoff: float = 5.0,
) -> None:
    """Run `handler` on the batch until it succeeds (consumers are idempotent)."""
    backoff = initial_backoff
    attempt = 0
    while True:
        attempt += 1
        try:
            await handler(messages)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            first = messages[0]
            log.exception(
                "handler failed; retrying",
                extra={
                    "topic": first.topic,
                    "key": first.key,
                    "messages": len(messages),
                    "attempt": attempt,
                },
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
