"""A message a consumer group cannot process is set aside after bounded retries, on a real
database: the group goes on with the messages after it, the record says which and why, the
metric counts it, and a replay after the fix feeds it to that group alone, once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError

from events.bus import Message
from events.bus.base import Unprocessable
from events.bus.memory import MemoryBus
from events.quarantine import Quarantine, replay_requested
from fhirstore.clock import SystemClock
from fhirstore.db.engine import create_engine
from fhirstore.db.migrate import upgrade
from fhirstore.store import Store
from fhirstore.wire import CHANGES_TOPIC, EVENT_ID_HEADER

QUICK = {"attempts": 3, "initial_backoff": 0.01, "max_backoff": 0.05}


class Consumer:
    """A batch handler that fails for the keys in `poison` (with `error`), and records the
    keys it processed, in order."""

    def __init__(self, *poison: str, error: type[Exception] = RuntimeError) -> None:
        self.poison = set(poison)
        self.error = error
        self.processed: list[str] = []
        self.tries: dict[str, int] = {}

    async def __call__(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.tries[message.key] = self.tries.get(message.key, 0) + 1
            if message.key in self.poison:
                raise self.error(f"cannot handle {message.key}")
        self.processed.extend(m.key for m in messages)


def change(key: str, version: int = 1, sequence: int = 7) -> Message:
    resource_type, _, resource_id = key.partition("/")
    body = {
        "eventId": f"event-{resource_id}",
        "sequence": sequence,
        "resourceType": resource_type,
        "id": resource_id,
        "versionId": str(version),
        "interaction": "update",
        "timestamp": "2026-12-06T10:00:00Z",
        "resource": {"resourceType": resource_type, "id": resource_id, "name": [{"text": "X"}]},
    }
    return Message(
        CHANGES_TOPIC,
        key,
        json.dumps(body).encode(),
        {EVENT_ID_HEADER: f"event-{resource_id}"},
    )


def quarantined(group: str) -> float:
    return REGISTRY.get_sample_value("herald_quarantined_messages_total", {"consumer": group}) or 0


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    engine = create_engine(database_url)
    await upgrade(engine)
    try:
        yield Store(engine, SystemClock())
    finally:
        await engine.dispose()


async def started(quarantine: Quarantine, **consumers: Consumer) -> MemoryBus:
    bus = MemoryBus()
    for group, consumer in consumers.items():
        bus.subscribe_batch(CHANGES_TOPIC, group, consumer)
    bus.set_aside_with(quarantine)
    await bus.start()
    return bus


async def test_a_poison_change_is_set_aside_and_later_changes_are_processed(
    store: Store,
) -> None:
    quarantine = Quarantine(store, **QUICK)
    failing, other = Consumer("Patient/poison"), Consumer()
    bus = await started(quarantine, g_failing=failing, g_other=other)
    before = quarantined("g_failing")

    await bus.publish([change("Patient/a"), change("Patient/poison", 3, 42), change("Patient/b")])
    await bus.publish([change("Patient/c")])

    assert failing.processed == ["Patient/a", "Patient/b", "Patient/c"]
    assert failing.tries["Patient/poison"] == 1 + QUICK["attempts"]  # the batch, then alone
    assert other.processed == ["Patient/a", "Patient/poison", "Patient/b", "Patient/c"]
    [record] = await quarantine.records()
    assert (record.consumer_group, record.topic, record.key) == (
        "g_failing",
        CHANGES_TOPIC,
        "Patient/poison",
    )
    assert (record.event_id, record.version_id, record.sequence) == ("event-poison", "3", 42)
    assert record.error_class == "builtins.RuntimeError"
    assert record.reason.startswith("RuntimeError at test_quarantine.py:")
    assert "after 3 tries: cannot handle Patient/poison" in record.reason
    assert record.status == "quarantined"
    assert quarantined("g_failing") == before + 1


async def test_a_replay_after_the_fix_feeds_that_group_alone_once(store: Store) -> None:
    quarantine = Quarantine(store, **QUICK)
    failing, other = Consumer("Patient/poison"), Consumer()
    bus = await started(quarantine, g_failing=failing, g_other=other)
    await bus.publish([change("Patient/poison")])
    [record] = await quarantine.records()

    # Asked for while still broken: it fails again and stays, with the new reason.
    assert (await quarantine.request_replay(record.id)).status == "replay-requested"
    assert await replay_requested(quarantine, bus) == 0
    [again] = await quarantine.records()
    assert again.reason.startswith("replay: RuntimeError")
    assert again.status == "quarantined"

    failing.poison.clear()  # the fix
    await quarantine.request_replay(record.id)
    assert await replay_requested(quarantine, bus) == 1
    assert await replay_requested(quarantine, bus) == 0  # nothing asked for any more
    assert failing.processed == ["Patient/poison"]
    assert other.processed == ["Patient/poison"]  # only its first delivery
    assert await quarantine.records() == []
    [resolved] = await quarantine.records(include_resolved=True)
    assert resolved.status == "resolved"
    assert await quarantine.request_replay(record.id) is None  # resolved: nothing to replay


async def test_an_unprocessable_message_is_set_aside_at_the_first_try(store: Store) -> None:
    quarantine = Quarantine(store, **QUICK)
    consumer = Consumer("Patient/garbled", error=Unprocessable)
    bus = await started(quarantine, g=consumer)
    await bus.publish([Message(CHANGES_TOPIC, "Patient/garbled", b"\x00not json")])
    [record] = await quarantine.records()
    assert consumer.tries["Patient/garbled"] == 1
    assert record.attempts == 1
    assert (record.event_id, record.version_id, record.sequence) == (None, None, None)


async def test_a_database_error_while_the_database_answers_counts_and_is_bounded(
    store: Store,
) -> None:
    """A "transient" error that persists although the database is up is the message's: it
    is tried `attempts` times, then set aside, not retried forever."""
    quarantine = Quarantine(store, **QUICK)
    consumer = Consumer("Patient/p", error=lambda text: OperationalError(text, {}, Exception()))
    bus = await started(quarantine, g=consumer)
    async with asyncio.timeout(10):
        await bus.publish([change("Patient/p")])
    assert consumer.tries["Patient/p"] == QUICK["attempts"]
    [record] = await quarantine.records()
    assert record.error_class == "sqlalchemy.exc.OperationalError"


async def test_an_unreachable_database_is_an_outage_and_is_waited_out(store: Store) -> None:
    """While the database does not answer, failures are not the message's: they are not
    counted, and the message is processed once it is back."""
    # Nothing listens on port 9 of the loopback address: connecting is refused.
    gone = Store(create_engine("postgresql+asyncpg://herald@127.0.0.1:9/herald"), SystemClock())
    try:
        away = Quarantine(gone, **QUICK)
        assert await away.outage(OperationalError("connect", {}, ConnectionRefusedError()))
    finally:
        await gone.engine.dispose()
    up = Quarantine(store, **QUICK)
    assert not await up.outage(OperationalError("locked", {}, Exception()))
    assert not await up.outage(RuntimeError("a bug"))

    class Flaky(Quarantine):
        """The database away for the first 6 failures, then back."""

        outages = 6
        over = asyncio.Event()

        async def outage(self, error: Exception) -> bool:
            self.outages -= 1
            if self.outages == 0:
                self.over.set()
            return self.outages >= 0

    flaky = Flaky(store, **QUICK)
    consumer = Consumer("Patient/p", error=OSError)
    bus = await started(flaky, g=consumer)
    task = asyncio.create_task(bus.publish([change("Patient/p")]))
    async with asyncio.timeout(10):
        await flaky.over.wait()
    assert consumer.tries["Patient/p"] == 6  # more than `attempts`: none of them counted
    assert await flaky.records() == []
    consumer.poison.clear()  # back
    async with asyncio.timeout(10):
        await task
    assert consumer.processed == ["Patient/p"]
    assert await flaky.records() == []


async def test_a_redelivered_poison_change_keeps_one_record(store: Store) -> None:
    """Kafka redelivers what was not committed (a crash right after the record was written):
    the change fails again and its tries are added to the same record."""
    quarantine = Quarantine(store, **QUICK)
    bus = await started(quarantine, g=Consumer("Patient/poison"))
    await bus.publish([change("Patient/poison")])
    await bus.publish([change("Patient/poison")])
    [record] = await quarantine.records()
    assert record.attempts == 2 * QUICK["attempts"]


async def test_whatever_another_producer_wrote_gets_its_record(store: Store) -> None:
    """A record on the stream from outside Herald may carry NUL characters, an oversized id or
    sequence, or JSON nested too deep to read: it is still set aside, never stalling the group."""
    quarantine = Quarantine(store, **QUICK)
    deep = b"[" * 100_000 + b"]" * 100_000
    odd = [
        Message(CHANGES_TOPIC, "Patient/\x00nul", b"\x00", {EVENT_ID_HEADER: "e\x00" * 100}),
        Message(CHANGES_TOPIC, "Patient/" + "x" * 500, json.dumps({"sequence": 10**30}).encode()),
        Message(CHANGES_TOPIC, "Patient/deep", deep),
    ]
    consumer = Consumer(*(m.key for m in odd), error=Unprocessable)
    bus = await started(quarantine, g=consumer)
    async with asyncio.timeout(20):
        await bus.publish(odd)
    records = await quarantine.records()
    assert len(records) == 3
    assert records[0].key == "Patient/\ufffdnul"
    assert records[0].event_id == ("e\ufffd" * 32)
    assert records[1].sequence is None
    assert len(records[1].key) == 256


async def test_the_logs_name_the_change_never_its_content(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async def quoting(messages: Sequence[Message]) -> None:
        for message in messages:
            raise ValueError(f"cannot read {json.loads(message.value)['resource']['name']}")

    quarantine = Quarantine(store, **QUICK)
    bus = MemoryBus()
    bus.subscribe_batch(CHANGES_TOPIC, "g", quoting)
    bus.set_aside_with(quarantine)
    await bus.start()
    with caplog.at_level("DEBUG", logger="events"):  # Herald's stream, every level
        await bus.publish([change("Patient/quoted")])
    [record] = await quarantine.records()
    assert "'text': 'X'" in record.reason  # the record (for administrators) has the error
    assert "'text': 'X'" not in caplog.text  # the logs do not
    assert "consumer g: ValueError at test_quarantine.py:" in caplog.text
    assert "Patient/quoted set aside in the quarantine after 3 tries" in caplog.text
