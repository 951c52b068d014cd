"""The bus interface. Domain code registers handlers and publishes; it never knows the transport.

Contract shared by every implementation:
- `publish` returns only once every message is durably accepted (Kafka: acknowledged by the
  broker; in-process: handled by every subscribed group). Messages with the same key keep order.
- Each consumer group receives every message at least once, in key order. A handler that raises
  is retried with backoff; the bus never skips a message silently.
- With a quarantine (`set_aside_with`), retries are bounded: a message its group's handler still
  cannot process after `attempts` tries is handed to the quarantine (a dead-letter record) and
  the group moves on. A failure the quarantine calls an outage (the database unreachable) is
  waited out and not counted: it is not the message's fault. Without one, a failing message is
  retried until it succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from events.bus.topic import TopicSpec
from fhirstore import Backoff, SystemClock, failed_at

log = logging.getLogger(__name__)

# A bus is built apart from the store and its clock: a consumer's retries wait in real time
# (they wait for a handler's database or broker to come back, which no test clock moves).
_sleep = SystemClock().sleep


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


class Unprocessable(Exception):
    """Raised by a handler for a message it can never process (e.g. it cannot be parsed):
    retrying cannot help, so with a quarantine it is set aside at the first try."""


class SetAside(Protocol):
    """Where a consumer group puts a message it cannot process (`events.quarantine`)."""

    attempts: int  # tries of a message before it is set aside
    initial_backoff: float  # seconds before the second try; doubled per try
    max_backoff: float

    async def outage(self, error: Exception) -> bool:
        """Whether `error` comes from an outage of what every message needs (the database
        unreachable) rather than from the message: such a failure is waited out, uncounted."""
        ...

    async def set_aside(
        self, group: str, message: Message, error: Exception, attempts: int
    ) -> None:
        """Keep `message` as quarantined for `group`, with why (raises if it cannot)."""
        ...


class Bus(Protocol):
    def declare(self, topic: TopicSpec) -> None:
        """Declare a topic this process publishes to, with its message schema (before `start`;
        declaring the same one again is harmless, another one under the same name is refused).
        The Kafka bus publishes only to declared topics, through a FastStream publisher each,
        so the AsyncAPI document generated from them lists every topic Herald writes."""
        ...

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

    def set_aside_with(self, quarantine: SetAside) -> None:
        """Bound the retries of every consumer group: what a group's handler cannot process
        goes to `quarantine` and the group moves on."""
        ...

    def consumers(self) -> Mapping[tuple[str, str], BatchHandler]:
        """The handler of each (topic, group) this process consumes, to feed one of them a
        message again (a quarantine replay) without the other groups seeing it."""
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
    delays = Backoff(initial_backoff, max_backoff).delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            await handler(messages)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            _log_failure(error, "", messages, attempt, "retrying")
            await _sleep(next(delays))


async def consume(
    handler: BatchHandler,
    messages: Sequence[Message],
    *,
    group: str,
    quarantine: SetAside | None,
) -> None:
    """Hand `messages` to `group`'s handler: until it succeeds without a quarantine; with one,
    a batch that fails is taken apart and each message gets `attempts` tries of its own, after
    which it is set aside. Returns once every message was processed or set aside."""
    if quarantine is None:
        await handle_batch_with_retry(handler, messages)
        return
    if len(messages) > 1 and await _tries(handler, messages, group, quarantine, budget=1) is None:
        return
    # One of them may be poison: find it by taking them one at a time, in order.
    for message in messages:
        failed = await _tries(handler, [message], group, quarantine, budget=quarantine.attempts)
        if failed is not None:
            await _set_aside(quarantine, group, message, *failed)


async def _tries(
    handler: BatchHandler,
    messages: Sequence[Message],
    group: str,
    quarantine: SetAside,
    *,
    budget: int,
) -> tuple[Exception, int] | None:
    """Up to `budget` counted tries (outages wait, uncounted); the last error if all failed."""
    delays = _backoff(quarantine).delays()
    counted = 0
    while True:
        try:
            await handler(messages)
            return None
        except asyncio.CancelledError:
            raise
        except Unprocessable as error:
            _log_failure(error, group, messages, counted + 1, "it cannot be processed")
            return error, counted + 1
        except Exception as error:
            if await quarantine.outage(error):
                _log_failure(error, group, messages, counted, "an outage; waiting it out")
            else:
                counted += 1
                if counted >= budget:
                    then = "taking the batch apart" if len(messages) > 1 else "no tries left"
                    _log_failure(error, group, messages, counted, then)
                    return error, counted
                _log_failure(error, group, messages, counted, "retrying")
        await _sleep(next(delays))


async def _set_aside(
    quarantine: SetAside, group: str, message: Message, error: Exception, attempts: int
) -> None:
    """Record it; while that fails (the database away), keep trying: never drop it."""
    delays = _backoff(quarantine).delays()
    while True:
        try:
            await quarantine.set_aside(group, message, error, attempts)
        except asyncio.CancelledError:
            raise
        except Exception as failure:
            _log_failure(failure, group, [message], attempts, "could not quarantine; retrying")
        else:
            log.error(
                "consumer %s: %s set aside in the quarantine after %d tries (%s); the consumer "
                "goes on. `herald quarantine list` shows why, `herald quarantine replay` "
                "feeds it again once fixed",
                group,
                message.key,
                attempts,
                type(error).__name__,
                extra={"topic": message.topic, "key": message.key, "group": group},
            )
            return
        await _sleep(next(delays))


def _backoff(quarantine: SetAside) -> Backoff:
    return Backoff(quarantine.initial_backoff, quarantine.max_backoff)


def _log_failure(
    error: Exception, group: str, messages: Sequence[Message], attempt: int, then: str
) -> None:
    first = messages[0]
    log.warning(
        "consumer %s: %s at %s on %s (%d messages, attempt %d); %s",
        group or "?",
        type(error).__name__,
        failed_at(error),
        first.key,
        len(messages),
        attempt,
        then,
        extra={"topic": first.topic, "key": first.key, "group": group, "attempt": attempt},
    )
