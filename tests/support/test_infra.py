"""Smoke tests: the real Kafka broker and PostgreSQL server started by the fixtures work."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.support.kafka import KafkaBroker
from tests.support.postgres import PostgresServer, asyncpg_dsn

TIMEOUT_S = 60


def _topic() -> str:
    return f"infra-{uuid.uuid4().hex[:12]}"


async def _read(bootstrap: str, topic: str, count: int) -> list[tuple[bytes | None, bytes | None]]:
    """The first ``count`` records of partition 0, as (key, value)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        records: list[tuple[bytes | None, bytes | None]] = []
        async with asyncio.timeout(TIMEOUT_S):
            while len(records) < count:  # bounded by the timeout
                batch = await consumer.getmany(partition, timeout_ms=1000)
                records += [(r.key, r.value) for r in batch.get(partition, [])]
        return records
    finally:
        await consumer.stop()


async def test_message_round_trips_with_key_and_headers(kafka_bootstrap: str) -> None:
    topic = _topic()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await producer.send_and_wait(
                topic, b'{"id": 1}', key=b"Patient/1", headers=[("trace", b"abc")]
            )
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{topic}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"Patient/1", b'{"id": 1}')
    assert list(record.headers) == [("trace", b"abc")]


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_broker_restart_keeps_topic_data(kafka_broker: KafkaBroker, how: str) -> None:
    if not kafka_broker.controllable:
        pytest.skip("external broker (HERALD_TEST_KAFKA_BOOTSTRAP) cannot be restarted")
    topic, bootstrap = _topic(), kafka_broker.bootstrap
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            for i in range(3):
                await producer.send_and_wait(topic, f"before-{i}".encode(), partition=0)
        await asyncio.to_thread(kafka_broker.stop if how == "stop" else kafka_broker.kill)
        assert not kafka_broker.running
        await asyncio.to_thread(kafka_broker.start)
        assert kafka_broker.bootstrap == bootstrap
        async with asyncio.timeout(TIMEOUT_S):  # the same client reconnects: same port
            await producer.send_and_wait(topic, b"after", partition=0)
    finally:
        await producer.stop()

    values = [value for _key, value in await _read(bootstrap, topic, 4)]
    assert values == [b"before-0", b"before-1", b"before-2", b"after"]


async def test_postgres_accepts_connections(postgres_server: PostgresServer) -> None:
    assert postgres_server.url.startswith("postgresql+asyncpg://")
    conn = await asyncpg.connect(postgres_server.dsn, timeout=TIMEOUT_S)
    try:
        version = await conn.fetchval("SELECT version()")
    finally:
        await conn.close()
    assert version.startswith("PostgreSQL")


async def test_fresh_databases_are_isolated(fresh_database: Callable[[str], str]) -> None:
    first, second = fresh_database("infra_first"), fresh_database("infra_second")
    conn = await asyncpg.connect(asyncpg_dsn(first), timeout=TIMEOUT_S)
    try:
        await conn.execute("CREATE TABLE note (body text); INSERT INTO note VALUES ('x')")
    finally:
        await conn.close()

    conn = await asyncpg.connect(asyncpg_dsn(second), timeout=TIMEOUT_S)
    try:
        assert await conn.fetchval("SELECT to_regclass('note')") is None
    finally:
        await conn.close()

    again = fresh_database("infra_first")  # same name: recreated empty
    conn = await asyncpg.connect(asyncpg_dsn(again), timeout=TIMEOUT_S)
    try:
        assert await conn.fetchval("SELECT to_regclass('note')") is None
    finally:
        await conn.close()


async def test_module_database_is_empty(module_database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(module_database_url), timeout=TIMEOUT_S)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert tables == 0
