"""Kafka bus (FastStream + aiokafka): the scaled-out shape.

Producer: idempotent, `acks=all`, so a retried send neither duplicates nor reorders within a key.
Consumers: one FastStream subscriber per (topic, group), offsets committed only after the handler
succeeded, so a crash redelivers instead of losing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares.acknowledgement.config import AckPolicy

from events.bus.base import Handler, Message, handle_with_retry


class KafkaBus:
    def __init__(self, bootstrap: str, *, client_id: str = "herald") -> None:
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
        self._started = False

    def subscribe(self, topic: str, group: str, handler: Handler) -> None:
        async def on_message(msg: KafkaMessage) -> None:
            raw = msg.raw_message
            key = raw.key.decode() if raw.key else ""
            headers = {k: v.decode() for k, v in (raw.headers or ())}
            await handle_with_retry(handler, Message(topic, key, raw.value or b"", headers))

        subscriber = self.broker.subscriber(
            topic,
            group_id=group,
            auto_offset_reset="earliest",
            # The handler retries internally; should it still raise, seek back, never skip.
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_poll_interval_ms=600_000,
        )
        subscriber(on_message)

    async def start(self) -> None:
        await self.broker.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self.broker.stop()
            self._started = False

    async def publish(self, messages: Sequence[Message]) -> None:
        futures = [
            await self.broker.publish(
                m.value, m.topic, key=m.key.encode(), headers=m.headers, no_confirm=True
            )
            for m in messages
        ]
        await asyncio.gather(*futures)
