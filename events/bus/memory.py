"""In-process bus for the embedded default: every group's handler runs before `publish` returns.

Publishing waits for the handlers so that the outbox relay advances its cursor only after the
consumers have seen a change: a crash then replays it instead of losing it. With a quarantine,
`publish` also returns once a message a group cannot process has been set aside.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Sequence

from events.bus.base import BatchHandler, Handler, Message, SetAside, consume
from events.bus.topic import TopicSpec, record


class MemoryBus:
    def __init__(self) -> None:
        # topic -> group -> (handler, whether it takes one message at a time)
        self._groups: dict[str, dict[str, tuple[BatchHandler, bool]]] = defaultdict(dict)
        self._broadcasts: dict[str, list[BatchHandler]] = defaultdict(list)
        self._quarantine: SetAside | None = None
        self._running = False
        self._declared: dict[str, TopicSpec] = {}

    def declare(self, topic: TopicSpec) -> None:
        record(self._declared, topic)  # documentation only: any topic may be published here

    def subscribe(self, topic: str, group: str, handler: Handler) -> None:
        async def one_by_one(messages: Sequence[Message]) -> None:
            for message in messages:
                await handler(message)

        self._add(topic, group, one_by_one, single=True)

    def subscribe_batch(self, topic: str, group: str, handler: BatchHandler) -> None:
        self._add(topic, group, handler, single=False)

    def _add(self, topic: str, group: str, handler: BatchHandler, *, single: bool) -> None:
        if group in self._groups[topic]:
            raise ValueError(f"group {group!r} already consumes {topic!r} in this process")
        self._groups[topic][group] = (handler, single)

    def subscribe_broadcast(self, topic: str, handler: BatchHandler) -> None:
        self._broadcasts[topic].append(handler)

    def set_aside_with(self, quarantine: SetAside) -> None:
        self._quarantine = quarantine

    def consumers(self) -> dict[tuple[str, str], BatchHandler]:
        return {
            (topic, group): handler
            for topic, groups in self._groups.items()
            for group, (handler, _) in groups.items()
        }

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
        runs: list[Awaitable[None]] = [
            self._feed_group(group, handler, single, batch)
            for topic, batch in by_topic.items()
            for group, (handler, single) in self._groups.get(topic, {}).items()
        ]
        runs.extend(
            handler(batch)
            for topic, batch in by_topic.items()
            for handler in self._broadcasts.get(topic, ())
        )
        await asyncio.gather(*runs)

    async def _feed_group(
        self, group: str, handler: BatchHandler, single: bool, batch: list[Message]
    ) -> None:
        for part in [[m] for m in batch] if single else [batch]:
            await consume(handler, part, group=group, quarantine=self._quarantine)
