"""Kafka queue channel: each notification becomes one message on a topic the subscription names.

A Subscription whose `channel.endpoint` is `kafka:<topic>` (e.g. `kafka:notify.orders`) gets one
message per notification on that topic, written by an idempotent producer with `acks=all` on the
cluster at `HERALD_KAFKA_BOOTSTRAP`. What a reader of the topic gets:

- key: the Subscription id (UTF-8), so all notifications of one subscription land on one
  partition, in the order Herald sent them;
- value: the notification Bundle in the channel's payload MIME type; empty for a notification
  without payload;
- headers (UTF-8 values):
  - `Idempotency-Key`: the same on every retry of the same notification. A notification can be
    written twice (a retry after an attempt that got through without being acknowledged), so
    drop repeats by this key;
  - `Content-Type`: the payload MIME type, only on messages with a value;
  - `Herald-Subscription`: the Subscription id;
  - `Herald-Notification-Type`: `handshake`, `heartbeat`, `event-notification`, ...

The administrator sets `HERALD_QUEUE_TOPICS` to the topics subscriptions may write to: a
comma-separated list of exact names (`care-team-alerts`) and prefixes ending in `*` (`notify.*`).
Unset or empty, no Kafka queue subscription is accepted; `*` alone is refused, list prefixes
instead. Whatever the list says, subscriptions can never write to Herald's and Kafka's own
topics: `fhir.changes`, names starting with `herald.` or `__`, and Herald's namespaced topics
(`HERALD_KAFKA_NAMESPACE`). The topic is checked when a Subscription is created or changed.
Topics are created by the brokers on first write when they allow it; otherwise create them
beforehand, and give Herald's Kafka principal permission to write to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)

from channels.transport import Delivery, Failure, Outcome
from events.bus import TopicSpec
from fhirstore.wire import (
    CHANGES_TOPIC,
    IDEMPOTENCY_HEADER,
    NOTIFICATION_TYPE_HEADER,
    QUEUE_CLIENT_ID,
    QUEUE_TOPIC,
    SUBSCRIPTION_HEADER,
)
from fhirstore.wire import INTERNAL_TOPIC_PREFIXES as _INTERNAL_PREFIXES
from subscriptions import NotificationBundle

SETTING = "HERALD_QUEUE_TOPICS"
# What this channel writes, for the AsyncAPI document (it writes with a producer of its own).
QUEUE = TopicSpec(
    QUEUE_TOPIC,
    NotificationBundle,
    "The Kafka queue channel: a topic a Subscription names (`kafka:<topic>`, allowed by "
    "HERALD_QUEUE_TOPICS). One record per notification, in eventNumber order per subscription. "
    "Key: the Subscription id. Value: the notification Bundle (Backport IG; empty for a classic "
    f"subscription without payload). Headers: {IDEMPOTENCY_HEADER} (the same on a retry: drop "
    f"repeats by it), Content-Type, {SUBSCRIPTION_HEADER}, {NOTIFICATION_TYPE_HEADER} "
    "(handshake, heartbeat, event-notification).",
)
SCHEME = "kafka:"
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SHOWN = 80  # characters of an endpoint quoted in a message
_NAME_RULE = "1 to 249 letters, digits, '.', '_' or '-' (and not '.' or '..')"
_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)
# After these the producer's sender has stopped for good: the next send needs a new producer.
_BROKEN = (OutOfOrderSequenceNumber, ProducerFenced, ProducerClosed)


def queue_topic(endpoint: str) -> str:
    """The topic of a `kafka:<topic>` endpoint; `ValueError` says what is wrong with it."""
    scheme, colon, topic = endpoint.partition(":")
    endpoint = endpoint if len(endpoint) <= _SHOWN else endpoint[: _SHOWN - 3] + "..."
    if not colon or scheme.lower() != SCHEME[:-1]:
        raise ValueError(
            f"endpoint {endpoint!r} is not a Kafka queue endpoint: write kafka:<topic>"
        )
    if topic.startswith("//"):
        raise ValueError(f"endpoint {endpoint!r}: write kafka:<topic>, without '//'")
    if not topic:
        raise ValueError(f"endpoint {endpoint!r} names no topic: write kafka:<topic>")
    if not _legal(topic):
        raise ValueError(
            f"endpoint {endpoint!r} does not name a legal Kafka topic; use {_NAME_RULE}"
        )
    return topic


class QueueTopics:
    """The administrator's policy: which topics a `kafka:<topic>` endpoint may name.

    `entries` are exact topic names or prefixes ending in `*`. Internal topics (`fhir.changes`,
    `herald.*`, `__*` and the `internal` entries, in the same syntax) are refused even when an
    entry matches them. No entries: nothing is allowed.
    """

    __slots__ = (
        "_entries",
        "_exact",
        "_internal_exact",
        "_internal_prefixes",
        "_prefixes",
        "_usable",
    )

    def __init__(self, entries: Iterable[str] = (), internal: Iterable[str] = ()) -> None:
        self._entries = _entries(entries)
        self._exact, self._prefixes = _split(self._entries)
        self._internal_exact, self._internal_prefixes = _split(_entries(internal))
        # Entries that allow some non-internal topic (`herald.*` allows none).
        self._usable = tuple(e for e in self._entries if not self.internal(e.removesuffix("*")))

    @classmethod
    def parse(cls, text: str, internal: Iterable[str] = ()) -> QueueTopics:
        """From the setting's text, e.g. `"notify.*, care-team-alerts"`; malformed: ValueError."""
        return cls(text.split(","), internal)

    @property
    def entries(self) -> tuple[str, ...]:
        """The entries as configured (stripped, without repeats)."""
        return self._entries

    @property
    def enabled(self) -> bool:
        """True when some topic may be named (the channel is worth offering)."""
        return bool(self._usable)

    def __repr__(self) -> str:
        return f"QueueTopics({', '.join(self._entries)!r})"

    def check(self, endpoint: str) -> str:
        """The topic of an allowed `kafka:<topic>` endpoint; else `ValueError` says what to do."""
        if not self._usable:
            raise ValueError(
                "no Kafka topic is open to subscriptions on this server: the administrator "
                f"must list the allowed topics in {SETTING} (e.g. notify.*)"
            )
        try:
            topic = queue_topic(endpoint)
        except ValueError as exc:
            raise ValueError(f"{exc}; allowed here: {self.describe()}") from None
        if self.internal(topic):
            raise ValueError(
                f"topic {topic!r} is internal to Herald or Kafka and cannot receive "
                f"notifications; allowed here: {self.describe()}"
            )
        if topic not in self._exact and not topic.startswith(self._prefixes):
            raise ValueError(f"topic {topic!r} is not allowed; allowed here: {self.describe()}")
        return topic

    def internal(self, topic: str) -> bool:
        """Whether `topic` belongs to Herald or Kafka themselves."""
        return (
            topic == CHANGES_TOPIC
            or topic.startswith(_INTERNAL_PREFIXES)
            or topic in self._internal_exact
            or topic.startswith(self._internal_prefixes)
        )

    def describe(self) -> str:
        """In words, e.g. `care-team-alerts or a name starting with 'notify.'`."""
        words = [
            f"a name starting with {entry[:-1]!r}" if entry.endswith("*") else entry
            for entry in self._usable
        ]
        if len(words) < 2:
            return "".join(words) or "none"
        return f"{', '.join(words[:-1])} or {words[-1]}"


class KafkaQueueTransport:
    """Writes each notification as one Kafka message, with one shared producer. Call `aclose()`."""

    def __init__(self, bootstrap: str, *, client_id: str = QUEUE_CLIENT_ID) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        # Started on first send (aiokafka binds it to the running event loop).
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._stopping: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        async with self._starting:
            producer, self._producer = self._producer, None
        if producer is not None:
            self._discard(producer)
        await asyncio.gather(*self._stopping)

    async def send(self, delivery: Delivery) -> Outcome:
        started = time.monotonic()
        try:
            topic = queue_topic(delivery.endpoint)
        except ValueError as exc:
            return _failed(started, Failure.BLOCKED, str(exc))
        deadline = asyncio.get_running_loop().time() + delivery.timeout
        kafka, within = f"Kafka at {self._bootstrap}", _seconds(delivery.timeout)
        try:
            async with asyncio.timeout_at(deadline):
                producer = await self._started()
        except TimeoutError:
            error = f"could not connect to {kafka} within {within} to write to topic {topic!r}"
            return _failed(started, Failure.TIMEOUT, f"{error}; check {_BOOTSTRAP_HINT}")
        except KafkaConnectionError:
            error = f"could not connect to {kafka} to write to topic {topic!r}: no broker answered"
            return _failed(started, Failure.UNREACHABLE, f"{error}; check {_BOOTSTRAP_HINT}")
        except (KafkaError, OSError, ValueError) as exc:
            error = f"could not connect to {kafka} to write to topic {topic!r}: {exc}"
            return _failed(started, Failure.UNREACHABLE, f"{error}; check {_BOOTSTRAP_HINT}")
        try:
            async with asyncio.timeout_at(deadline):
                await producer.send_and_wait(
                    topic,
                    delivery.body if delivery.body is not None else b"",
                    key=delivery.subscription_id.encode(),
                    headers=_headers(delivery),
                )
        except TimeoutError:
            return _failed(started, Failure.TIMEOUT, _unacknowledged(kafka, topic, within))
        except (KafkaError, OSError) as exc:
            if isinstance(exc, _BROKEN) or type(exc) is KafkaError:
                self._replace(producer)
            return _failed(started, _kind(exc), _refused(kafka, topic, delivery, exc))
        return Outcome(ok=True, status_code=None, error=None, elapsed=time.monotonic() - started)

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap,
                    client_id=self._client_id,
                    acks="all",
                    enable_idempotence=True,
                )
                try:
                    await producer.start()
                except BaseException:
                    self._discard(producer)  # half-started: the next send starts a new one
                    raise
                self._producer = producer
            return self._producer

    def _replace(self, producer: AIOKafkaProducer) -> None:
        if self._producer is producer:
            self._producer = None
            self._discard(producer)

    def _discard(self, producer: AIOKafkaProducer) -> None:
        """Stop `producer` in the background (so a timed-out send need not wait for it)."""
        task = asyncio.create_task(_stop(producer))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)


_BOOTSTRAP_HINT = "HERALD_KAFKA_BOOTSTRAP and that the brokers are up"


def _headers(delivery: Delivery) -> list[tuple[str, bytes]]:
    headers = [(IDEMPOTENCY_HEADER, delivery.idempotency_key.encode())]
    if delivery.body is not None and delivery.content_type:
        headers.append(("Content-Type", delivery.content_type.encode()))
    headers.append((SUBSCRIPTION_HEADER, delivery.subscription_id.encode()))
    headers.append((NOTIFICATION_TYPE_HEADER, delivery.kind.encode()))
    return headers


def _unacknowledged(kafka: str, topic: str, within: str) -> str:
    return (
        f"{kafka} did not acknowledge the message to topic {topic!r} within {within}; "
        f"check {_BOOTSTRAP_HINT}, and that the topic exists or the brokers may create it"
    )


def _refused(kafka: str, topic: str, delivery: Delivery, exc: BaseException) -> str:
    if isinstance(exc, TopicAuthorizationFailedError):
        return (
            f"{kafka} does not let Herald write to topic {topic!r}: the Kafka administrator "
            "must grant Herald's principal Write on it"
        )
    if isinstance(exc, _TOO_LARGE):
        size = len(delivery.body or b"")
        return (
            f"the notification ({size} bytes) is too large for topic {topic!r} at {kafka}: "
            "ask for a smaller payload (content id-only or empty), or have the administrator "
            "raise the topic's max.message.bytes"
        )
    if isinstance(exc, KafkaTimeoutError):
        return _unacknowledged(kafka, topic, "Kafka's request timeout")
    return f"{kafka} did not take the message to topic {topic!r}: {type(exc).__name__}: {exc}"


async def _stop(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(KafkaError, OSError):
        await producer.stop()


def _kind(exc: BaseException) -> Failure:
    """The kind of failure a broker's refusal (or a lost connection) is."""
    if isinstance(exc, (TopicAuthorizationFailedError, *_TOO_LARGE)):
        return Failure.REJECTED
    if isinstance(exc, KafkaTimeoutError):
        return Failure.TIMEOUT
    if isinstance(exc, KafkaConnectionError | OSError):
        return Failure.UNREACHABLE
    return Failure.UNAVAILABLE


def _failed(started: float, failure: Failure, error: str) -> Outcome:
    elapsed = time.monotonic() - started
    return Outcome(ok=False, status_code=None, error=error, elapsed=elapsed, failure=failure)


def _legal(topic: str) -> bool:
    return _TOPIC.fullmatch(topic) is not None and topic not in {".", ".."}


def _entries(raw: Iterable[str]) -> tuple[str, ...]:
    """Stripped, validated entries (blank ones skipped); `ValueError` names a malformed one."""
    entries: list[str] = []
    for item in raw:
        entry = item.strip()
        if not entry:
            continue
        if entry == "*":
            raise ValueError(
                f"{SETTING}: '*' would allow every topic; list the topics or prefixes "
                "subscriptions may write to instead (e.g. notify.*)"
            )
        name = entry.removesuffix("*")
        if "*" in name:
            raise ValueError(f"{SETTING}: {entry!r}: '*' may only end an entry (a prefix)")
        prefix = entry.endswith("*")  # needs room for one more character after it
        if not (_TOPIC.fullmatch(name) and len(name) < 249 if prefix else _legal(name)):
            raise ValueError(f"{SETTING}: {entry!r} is not a legal topic name; use {_NAME_RULE}")
        if entry not in entries:
            entries.append(entry)
    return tuple(entries)


def _split(entries: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact names, prefixes) of validated entries."""
    exact = frozenset(e for e in entries if not e.endswith("*"))
    return exact, tuple(e[:-1] for e in entries if e.endswith("*"))


def _seconds(value: float) -> str:
    return f"{value:g} s"
