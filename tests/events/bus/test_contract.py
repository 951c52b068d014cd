"""The `Bus` contract (`events/bus/base.py`), written once against the port and run on every
implementation: the in-process `MemoryBus` and the `KafkaBus` on the suite's real broker.

What the port promises: a consumer group gets every message published to its topic, whole and
in key order; each group gets its own copy; a handler that raises gets the message again and
nothing after it in its key jumps ahead; with a quarantine, retries are bounded (an outage is
waited out, uncounted) and the group goes on; broadcast listeners hear every message of their
topic; `consumers()` feeds one group alone.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from pydantic import BaseModel

from events.bus import Bus, Message, TopicSpec
from events.bus.base import Unprocessable
from events.bus.kafka import KafkaBus
from events.bus.memory import MemoryBus
from tests.support.waiting import eventually

TOPIC = "contract"
ELSEWHERE = "elsewhere"


class Note(BaseModel):
    """The contract suite's messages: opaque bytes as far as the bus is concerned."""


DECLARED = [TopicSpec(name, Note, "contract suite") for name in (TOPIC, ELSEWHERE)]
# Kafka: joining a group and being assigned its partitions takes seconds on a fresh topic.
PATIENCE_S = 60.0
always = 1_000_000  # Group(failing={value: always}): every try raises


class Buses:
    """Starts buses of one installation (on Kafka: one namespace, as its processes share) and
    stops every one of them at the end of the test."""

    def __init__(self, make: Callable[[], Bus]) -> None:
        self._make = make
        self._running: list[Bus] = []

    async def started(self, *subscribe: Callable[[Bus], None]) -> Bus:
        """A new bus, with each of `subscribe` applied to it before it starts."""
        bus = self._make()
        for spec in DECLARED:  # the port: a publisher declares its topics before start
            bus.declare(spec)
        for add in subscribe:
            add(bus)
        await bus.start()
        self._running.append(bus)
        return bus

    async def stop(self) -> None:
        for bus in reversed(self._running):
            await bus.stop()


@pytest.fixture(params=[pytest.param("memory"), pytest.param("kafka", marks=pytest.mark.kafka)])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[Buses]:
    if request.param == "memory":
        made = Buses(MemoryBus)
    else:
        bootstrap: str = request.getfixturevalue("kafka_bootstrap")
        namespace = f"bus{uuid.uuid4().hex[:8]}."
        made = Buses(lambda: KafkaBus(bootstrap, namespace=namespace))
    try:
        yield made
    finally:
        await made.stop()


@dataclass
class Group:
    """A consumer group's handler: records what it processed, and fails as told: `failing`
    maps a message value to how many of its tries raise (`always` for every one)."""

    failing: dict[bytes, int] = field(default_factory=dict)
    error: type[Exception] = RuntimeError
    processed: list[Message] = field(default_factory=list)
    tries: dict[bytes, int] = field(default_factory=dict)

    async def one(self, message: Message) -> None:
        await self.batch([message])

    async def batch(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.tries[message.value] = self.tries.get(message.value, 0) + 1
            if self.tries[message.value] <= self.failing.get(message.value, 0):
                raise self.error(f"cannot handle {message.value!r}")
        self.processed.extend(messages)

    def values(self, key: str | None = None) -> list[bytes]:
        """Processed values (of `key`), in arrival order, a redelivered one counted once."""
        return list(dict.fromkeys(m.value for m in self.processed if key in (None, m.key)))

    async def has(self, *values: bytes) -> None:
        await eventually(
            lambda: _true(set(values) <= set(self.values())),
            within=PATIENCE_S,
            what=lambda: f"expected {sorted(values)}, processed {self.values()}",
        )


async def _true(value: bool) -> bool:
    return value


class Outage(Exception):
    """What the fake quarantine calls an outage (as the real one calls the database away)."""


@dataclass
class FakeQuarantine:
    """A `SetAside` that keeps what it was handed, in memory."""

    attempts: int = 3
    initial_backoff: float = 0.01
    max_backoff: float = 0.05
    kept: list[tuple[str, bytes, str, int]] = field(default_factory=list)

    async def outage(self, error: Exception) -> bool:
        return isinstance(error, Outage)

    async def set_aside(
        self, group: str, message: Message, error: Exception, attempts: int
    ) -> None:
        self.kept.append((group, message.value, type(error).__name__, attempts))


def message(key: str, value: str, **headers: str) -> Message:
    return Message(TOPIC, key, value.encode(), headers)


async def test_a_group_gets_each_message_of_its_topic_whole(buses: Buses) -> None:
    group = Group()
    bus = await buses.started(lambda b: b.subscribe(TOPIC, "g", group.one))
    sent = message("Patient/1", '{"id": "1"}', **{"herald-event-id": "e-1", "note": "Zürich"})
    await bus.publish([Message(ELSEWHERE, "Patient/1", b"not for g"), sent])
    await group.has(sent.value)

    got = group.processed[0]
    assert (got.topic, got.key, got.value) == (sent.topic, sent.key, sent.value)
    assert sent.headers.items() <= got.headers.items()  # a transport may add its own
    assert b"not for g" not in group.values()


async def test_every_group_gets_every_message_in_key_order(buses: Buses) -> None:
    one_by_one, in_batches = Group(), Group()
    bus = await buses.started(
        lambda b: b.subscribe(TOPIC, "one-by-one", one_by_one.one),
        lambda b: b.subscribe_batch(TOPIC, "in-batches", in_batches.batch),
    )
    keys = [f"Patient/{n}" for n in range(3)]
    for version in range(10):  # interleaved keys, several publishes
        await bus.publish([message(key, f"{key}@{version}") for key in keys])

    for group in (one_by_one, in_batches):
        await group.has(*(f"{key}@{v}".encode() for key in keys for v in range(10)))
        for key in keys:
            assert group.values(key) == [f"{key}@{v}".encode() for v in range(10)]


async def test_a_failing_handler_gets_the_message_again_and_its_key_waits(buses: Buses) -> None:
    group = Group(failing={b"A@1": 2})
    bus = await buses.started(lambda b: b.subscribe(TOPIC, "g", group.one))
    await bus.publish([message("A", "A@1"), message("A", "A@2"), message("B", "B@1")])
    await group.has(b"A@1", b"A@2", b"B@1")

    assert group.tries[b"A@1"] >= 3  # two failures, then processed
    assert group.values("A") == [b"A@1", b"A@2"]


async def test_with_a_quarantine_a_message_that_keeps_failing_is_set_aside(buses: Buses) -> None:
    quarantine = FakeQuarantine(attempts=3)
    group = Group(failing={b"A@1": always})
    bus = await buses.started(
        lambda b: b.subscribe(TOPIC, "g", group.one), lambda b: b.set_aside_with(quarantine)
    )
    await bus.publish([message("A", "A@1"), message("A", "A@2"), message("B", "B@1")])
    await group.has(b"A@2", b"B@1")

    assert quarantine.kept == [("g", b"A@1", "RuntimeError", 3)]
    assert group.tries[b"A@1"] == 3
    assert b"A@1" not in group.values()


async def test_a_failing_batch_is_taken_apart_and_only_the_poison_is_set_aside(
    buses: Buses,
) -> None:
    quarantine = FakeQuarantine(attempts=2)
    group = Group(failing={b"B@1": always})
    bus = await buses.started(
        lambda b: b.subscribe_batch(TOPIC, "g", group.batch),
        lambda b: b.set_aside_with(quarantine),
    )
    sent = [message(k, f"{k}@{v}") for v in (1, 2) for k in ("A", "B", "C")]
    await bus.publish(sent)
    await group.has(*(m.value for m in sent if m.value != b"B@1"))

    assert [(g, value, attempts) for g, value, _, attempts in quarantine.kept] == [("g", b"B@1", 2)]
    assert group.values("B") == [b"B@2"]


async def test_an_unprocessable_message_is_set_aside_at_the_first_try(buses: Buses) -> None:
    quarantine = FakeQuarantine(attempts=5)
    group = Group(failing={b"A@1": always}, error=Unprocessable)
    bus = await buses.started(
        lambda b: b.subscribe(TOPIC, "g", group.one), lambda b: b.set_aside_with(quarantine)
    )
    await bus.publish([message("A", "A@1"), message("A", "A@2")])
    await group.has(b"A@2")

    assert quarantine.kept == [("g", b"A@1", "Unprocessable", 1)]
    assert group.tries[b"A@1"] == 1


async def test_an_outage_is_waited_out_and_not_counted(buses: Buses) -> None:
    quarantine = FakeQuarantine(attempts=2)
    group = Group(failing={b"A@1": 4}, error=Outage)
    bus = await buses.started(
        lambda b: b.subscribe(TOPIC, "g", group.one), lambda b: b.set_aside_with(quarantine)
    )
    await bus.publish([message("A", "A@1"), message("A", "A@2")])
    await group.has(b"A@1", b"A@2")

    assert quarantine.kept == []
    assert group.tries[b"A@1"] == 5
    assert group.values("A") == [b"A@1", b"A@2"]


async def test_consumers_feed_one_group_alone(buses: Buses) -> None:
    first, second = Group(), Group()
    bus = await buses.started(
        lambda b: b.subscribe(TOPIC, "first", first.one),
        lambda b: b.subscribe_batch(TOPIC, "second", second.batch),
    )
    assert set(bus.consumers()) == {(TOPIC, "first"), (TOPIC, "second")}

    await bus.consumers()[(TOPIC, "second")]([message("A", "again")])

    assert second.values() == [b"again"]
    assert first.values() == []


async def test_every_broadcast_listener_hears_what_is_published_to_its_topic(
    buses: Buses,
) -> None:
    first, second = Group(), Group()
    bus = await buses.started(
        lambda b: b.subscribe_broadcast(TOPIC, first.batch),
        lambda b: b.subscribe_broadcast(TOPIC, second.batch),
    )
    await bus.publish([Message(ELSEWHERE, "sub-0", b"not for them")])

    # Kafka: a listener hears from the moment its partitions are assigned; ping until then.
    async def both_heard() -> bool:
        await bus.publish([message("sub-1", "ping")])
        return all(b"ping" in g.values() for g in (first, second))

    await eventually(both_heard, within=PATIENCE_S, what=lambda: "a listener never heard")
    assert first.values() == second.values() == [b"ping"]
