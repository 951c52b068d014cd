"""In-process bus for the embedded default: every group's handler runs before `publish` returns.

Publishing waits for the handlers so that the outbox relay advances its cursor only after the
consumers have seen a change: a crash then replays it instead of losing it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from events.bus.base import (
    BatchHandler,
    Handler,
    Message,
    handle_batch_with_retry,
    handle_with_retry,
)


class MemoryBus:
    def __init__(self) -> None:
        self._groups: dict[str, dict[str, BatchHandler]] = defaultdict(dict)
        self._broadcasts: dict[str, list[BatchHandler]] = defaultdict(list)
        self._running = False

    def subscribe(self, topic: str, group: str, handler: Handler) -> None:
        async def one_by_one(messages: Sequence[Message]) -> None:
            for message in messages:
                await handle_with_retry(handler, message)

        self.subscribe_batch(topic, group, one_by_one)

    def subscribe_batch(self, topic: str, group: str, handler: BatchHandler) -> None:
        if group in self._groups[topic]:
            raise ValueError(f"group {group!r} already consumes {topic!r} in this process")
        self._groups[topic][group] = handler

    def subscribe_broadcast(self, topic: str, handler: BatchHandler) -> None:
        self._broadcasts[topic].append(handler)

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    async def publish(self, messages: Sequence[Message]) -> None:
        if not self._running:
            raise RuntimeError("bus is not started")
        by_topic: dict[str, list[Message]] = defaultdict(list)
        for message in messages:
            by_topic[message.topic].append(message)
        runs = [
            self._feed_group(handler, batch)
            for topic, batch in by_topic.items()
            for handler in self._groups.get(topic, {}).values()
        ]
        runs.extend(
            handler(batch)
            for topic, batch in by_topic.items()
            for handler in self._broadcasts.get(topic, ())
        )
        await asyncio.gather(*runs)

    @staticmethod
    async def _feed_group(handler: BatchHandler, batch: list[Message]) -> None:
        await handle_batch_with_retry(handler, batch)
