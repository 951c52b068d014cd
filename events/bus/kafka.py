"""Kafka bus (FastStream + aiokafka): the scaled-out shape.

Producer: idempotent, `acks=all`, so a retried send neither duplicates nor reorders within a key.
Consumers: one FastStream subscriber per (topic, group), offsets committed only after the handler
succeeded (or, with a quarantine, after what it could not process was set aside), so a crash
redelivers instead of losing.
Publishing: only to declared topics (`declare`), each through the FastStream publisher declared
with its message schema; those publishers and the subscribers are what `events.asyncapi`
documents, so the AsyncAPI document lists what this process writes and reads.
`namespace` prefixes every topic and group name, so several Herald installations (or test runs)
can share one Kafka cluster without seeing each other's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.client import AIOKafkaClient
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.publisher import DefaultPublisher
from faststream.message import StreamMessage
from faststream.middlewares.acknowledgement.config import AckPolicy

from events.bus.base import BatchHandler, Handler, Message, SetAside, consume
from events.bus.topic import TopicSpec, record
from fhirstore.wire import BUS_CLIENT_ID


class KafkaBus:
    def __init__(
        self, bootstrap: str, *, client_id: str = BUS_CLIENT_ID, namespace: str = ""
    ) -> None:
        self.namespace = namespace
        self.broker = KafkaBroker(
            bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=10_000,
            retry_backoff_ms=200,
            log_level=logging.DEBUG,  # per-message "Received"/"Processed" lines
        )
        self._bootstrap = bootstrap
        self._started = False
        self._quarantine: SetAside | None = None
        self._handlers: dict[tuple[str, str], BatchHandler] = {}
        self._declared: dict[str, TopicSpec] = {}
        self._publishers: dict[str, DefaultPublisher] = {}

    def declare(self, topic: TopicSpec) -> None:
        if record(self._declared, topic):
            self._publishers[topic.name] = self.broker.publisher(
                self.namespace + topic.name,
                title=topic.name,
                schema=topic.message,
                description=topic.description,
            )

    def subscribe(self, topic: str, group: str, handler: Handler) -> None:
        async def batch_of_one(messages: Sequence[Message]) -> None:
            for message in messages:
                await handler(message)

        async def on_message(msg: KafkaMessage) -> None:
            raw = msg.raw_message
            assert not isinstance(raw, tuple)  # a single-record subscriber gets one record
            key = _text(raw.key)
            headers = {k: _text(v) for k, v in (raw.headers or ())}
            message = Message(topic, key, raw.value or b"", headers)
            await consume(batch_of_one, [message], group=group, quarantine=self._quarantine)

        self._handlers[(topic, group)] = batch_of_one
        self._subscriber(topic, group, batch=False)(on_message)

    def subscribe_batch(self, topic: str, group: str, handler: BatchHandler) -> None:
        async def on_batch(msg: KafkaMessage) -> None:
            messages = _messages(topic, msg)
            await consume(handler, messages, group=group, quarantine=self._quarantine)

        self._handlers[(topic, group)] = handler
        self._subscriber(topic, group, batch=True)(on_batch)

    def set_aside_with(self, quarantine: SetAside) -> None:
        self._quarantine = quarantine

    def consumers(self) -> dict[tuple[str, str], BatchHandler]:
        return dict(self._handlers)

    def subscribe_broadcast(self, topic: str, handler: BatchHandler) -> None:
        async def on_batch(msg: KafkaMessage) -> None:
            await handler(_messages(topic, msg))

        self.broker.subscriber(
            self.namespace + topic,
            title=f"{topic}/broadcast",
            description="Read by every process, without a consumer group, from when it starts.",
            group_id=None,  # no group: every process reads every partition, from now on
            auto_offset_reset="latest",
            ack_policy=AckPolicy.MANUAL,  # nothing to commit without a group
            parser=_parse_batch_leniently,
            decoder=_undecoded,
            batch=True,
            max_records=500,
            batch_timeout_ms=5,
        )(on_batch)

    def _subscriber(self, topic: str, group: str, *, batch: bool) -> Any:
        options: dict[str, Any] = {}
        if batch:  # what is there within a few ms, up to 500: many changes, one transaction
            options = {"batch": True, "max_records": 500, "batch_timeout_ms": 5}
        return self.broker.subscriber(
            self.namespace + topic,
            title=f"{topic}/{group}",
            description=f"Read by consumer group `{group}`: every message, in key order.",
            group_id=self.namespace + group,
            auto_offset_reset="earliest",
            # `consume` retries (and quarantines); should it still raise, seek back, never skip.
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_poll_interval_ms=600_000,
            parser=_parse_batch_leniently if batch else _parse_leniently,
            decoder=_undecoded,
            **options,
        )

    async def start(self) -> None:
        """Connect and start the consumers; `KafkaConnectionError` when no broker answers."""
        await self._reachable()
        try:
            await self.broker.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.broker.stop()
            raise
        self._started = True

    async def _reachable(self) -> None:
        """Ask the bootstrap servers for the cluster's metadata once, with a client closed
        whatever happens. (FastStream leaves an unclosed producer behind when it cannot
        connect, which warns at exit.)"""
        client = AIOKafkaClient(bootstrap_servers=self._bootstrap)
        try:
            await client.bootstrap()
        finally:
            await client.close()

    async def stop(self) -> None:
        if self._started:
            await self.broker.stop()
            self._started = False

    async def publish(self, messages: Sequence[Message]) -> None:
        publishers = [self._publisher(m.topic) for m in messages]  # all declared, or none sent
        futures = [
            await publisher.publish(m.value, key=m.key.encode(), headers=m.headers, no_confirm=True)
            for publisher, m in zip(publishers, messages, strict=True)
        ]
        await asyncio.gather(*futures)

    def _publisher(self, topic: str) -> DefaultPublisher:
        try:
            return self._publishers[topic]
        except KeyError:
            raise ValueError(
                f"topic {topic!r} is not declared on this bus: declare it (`Bus.declare`) "
                "before start, so that the AsyncAPI document lists it"
            ) from None


def _messages(topic: str, msg: KafkaMessage) -> list[Message]:
    records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
    return [
        Message(topic, _text(r.key), r.value or b"", {k: _text(v) for k, v in (r.headers or ())})
        for r in records
    ]


def _text(value: bytes | None) -> str:
    """A record key or header value as text: absent is "", bytes that are not UTF-8 become U+FFFD
    (a producer outside Herald may send either; the message must still reach its handler)."""
    return value.decode(errors="replace") if value else ""


async def _parse_leniently(
    record: ConsumerRecord, parse: Callable[[ConsumerRecord], Awaitable[StreamMessage[Any]]]
) -> StreamMessage[Any]:
    """FastStream's parser decodes header values as strict UTF-8 and fails on a null one, and a
    record that fails to parse is redelivered forever; hand it header values it can decode."""
    headers = [(name, _text(value).encode()) for name, value in record.headers or ()]
    return await parse(dataclasses.replace(record, headers=headers))


async def _parse_batch_leniently(
    records: tuple[ConsumerRecord, ...],
    parse: Callable[[tuple[ConsumerRecord, ...]], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """`_parse_leniently` for a batch subscriber."""
    lenient = tuple(
        dataclasses.replace(r, headers=[(n, _text(v).encode()) for n, v in r.headers or ()])
        for r in records
    )
    return await parse(lenient)


async def _undecoded(message: StreamMessage[Any], decode: Callable[..., Any]) -> None:
    """Herald's handlers read the raw records (`KafkaMessage`), never FastStream's decoded body.
    Its JSON decoding is skipped: it fails on a number beyond a double (`1e400`, a valid FHIR
    decimal in a resource a change event carries), and a record that fails to decode is
    redelivered forever, before the handler or the quarantine could see it."""
    return None
