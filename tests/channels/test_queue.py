"""Kafka queue channel: the topic policy (pure) and the transport against a real Kafka broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

import channels.queue as queue_module
from channels.queue import KafkaQueueTransport, QueueTopics, queue_topic
from channels.transport import Delivery
from tests.support.deliveries import a_delivery
from tests.support.kafka import KafkaBroker
from tests.support.process import free_port
from tests.support.topics import read_topic

WAIT_S = 30.0
BODY = b'{"resourceType":"Bundle","type":"subscription-notification"}'


def delivery(endpoint: str, **changes: object) -> Delivery:
    fields = {"idempotency_key": "sub-1:1", "timeout": WAIT_S, **changes}
    body = fields.pop("body", BODY)
    return a_delivery(endpoint, body, **fields)  # type: ignore[arg-type]


# --- the administrator's policy ---------------------------------------------------------------

POLICY = QueueTopics.parse("notify.*, care-team-alerts")


@pytest.mark.parametrize(
    ("endpoint", "topic"),
    [
        ("kafka:care-team-alerts", "care-team-alerts"),
        ("kafka:notify.orders", "notify.orders"),
        ("kafka:notify.", "notify."),
        ("KAFKA:notify.Orders_2", "notify.Orders_2"),
    ],
)
def test_allowed_topic_is_returned(endpoint: str, topic: str) -> None:
    assert POLICY.check(endpoint) == topic


@pytest.mark.parametrize("endpoint", ["kafka:care-team", "kafka:notify", "kafka:other.orders"])
def test_topic_not_allowed_says_what_is(endpoint: str) -> None:
    with pytest.raises(ValueError) as caught:
        POLICY.check(endpoint)
    message = str(caught.value)
    assert "is not allowed" in message
    assert "a name starting with 'notify.' or care-team-alerts" in message


@pytest.mark.parametrize(
    "topic", ["fhir.changes", "herald.subscription-events", "__consumer_offsets", "prod-fhir.x"]
)
def test_internal_topics_are_refused_even_when_listed(topic: str) -> None:
    policy = QueueTopics.parse(
        "f*, h*, _*, herald.*, fhir.changes, __consumer_offsets, prod-*",
        internal=["prod-fhir.*", "prod-herald.delivery"],
    )
    with pytest.raises(ValueError, match="internal to Herald or Kafka"):
        policy.check(f"kafka:{topic}")
    assert policy.check("kafka:fhir.other") == "fhir.other"
    assert policy.check("kafka:herald-notes") == "herald-notes"
    assert policy.check("kafka:prod-orders") == "prod-orders"
    with pytest.raises(ValueError, match="internal"):
        policy.check("kafka:prod-herald.delivery")


def test_entries_naming_only_internal_topics_allow_nothing() -> None:
    policy = QueueTopics.parse("herald.*, fhir.changes, __*, ours.*, care", internal=["ours.*"])
    assert policy.enabled
    with pytest.raises(ValueError) as caught:
        policy.check("kafka:herald.x")
    assert str(caught.value).endswith("allowed here: care")
    assert not QueueTopics.parse("herald.*, fhir.changes").enabled
    with pytest.raises(ValueError, match="must list the allowed topics in HERALD_QUEUE_TOPICS"):
        QueueTopics.parse("herald.*, fhir.changes").check("kafka:herald.x")


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("https://example.org/hook", "not a Kafka queue endpoint"),
        ("notify.orders", "not a Kafka queue endpoint"),
        ("kafka:", "names no topic"),
        ("kafka://notify.orders", "without '//'"),
        ("kafka:notify orders", "does not name a legal Kafka topic"),
        ("kafka:notify/orders", "does not name a legal Kafka topic"),
        ("kafka:notify.ördes", "does not name a legal Kafka topic"),
        ("kafka:notify." + "x" * 243, "does not name a legal Kafka topic"),
    ],
)
def test_malformed_endpoint_is_explained(endpoint: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        POLICY.check(endpoint)
    assert "allowed here: a name starting with 'notify.' or care-team-alerts" in str(caught.value)


@pytest.mark.parametrize("topic", [".", ".."])
def test_dot_names_are_not_topics(topic: str) -> None:
    with pytest.raises(ValueError, match="does not name a legal Kafka topic"):
        queue_topic(f"kafka:{topic}")
    assert queue_topic("kafka:" + "x" * 249) == "x" * 249


@pytest.mark.parametrize("text", ["", "  ", " , ,"])
def test_empty_allow_list_allows_nothing_and_says_who_must_act(text: str) -> None:
    policy = QueueTopics.parse(text)
    assert not policy.enabled and policy.entries == ()
    with pytest.raises(ValueError) as caught:
        policy.check("kafka:notify.orders")
    assert "administrator must list the allowed topics in HERALD_QUEUE_TOPICS" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("notify.*, *", "would allow every topic"),
        ("a*b", "may only end an entry"),
        ("notify.**", "may only end an entry"),
        ("care team", "not a legal topic name"),
        ("..", "not a legal topic name"),
        ("x" * 249 + "*", "not a legal topic name"),
    ],
)
def test_malformed_entries_are_refused_at_parse(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        QueueTopics.parse(text)


def test_parse_strips_and_deduplicates() -> None:
    policy = QueueTopics.parse(" notify.* ,care-team-alerts,, notify.*,.* ")
    assert policy.entries == ("notify.*", "care-team-alerts", ".*")
    assert policy.enabled
    assert policy.check("kafka:.hidden") == ".hidden"


# --- the transport against a real broker -------------------------------------------------------


@pytest.fixture
async def transport(kafka_bootstrap: str) -> AsyncIterator[KafkaQueueTransport]:
    queue = KafkaQueueTransport(kafka_bootstrap)
    yield queue
    await queue.aclose()


def new_topic() -> str:
    return f"notify.test-{uuid.uuid4().hex[:12]}"


def headers(record: ConsumerRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


async def test_writes_body_keyed_by_subscription_with_headers(
    transport: KafkaQueueTransport, kafka_bootstrap: str
) -> None:
    topic = new_topic()
    outcome = await transport.send(delivery(f"kafka:{topic}"))
    assert outcome.ok and outcome.error is None and outcome.status_code is None

    [record] = await read_topic(kafka_bootstrap, topic, 1)
    assert record.key == b"sub-1" and record.value == BODY
    assert headers(record) == {
        "Idempotency-Key": "sub-1:1",
        "Content-Type": "application/fhir+json",
        "Herald-Subscription": "sub-1",
        "Herald-Notification-Type": "event-notification",
    }


async def test_notification_without_payload_has_empty_value_and_no_content_type(
    transport: KafkaQueueTransport, kafka_bootstrap: str
) -> None:
    topic = new_topic()
    outcome = await transport.send(
        delivery(
            f"kafka:{topic}", body=None, content_type="application/fhir+json", kind="heartbeat"
        )
    )
    assert outcome.ok

    [record] = await read_topic(kafka_bootstrap, topic, 1)
    assert record.value == b""
    assert headers(record) == {
        "Idempotency-Key": "sub-1:1",
        "Herald-Subscription": "sub-1",
        "Herald-Notification-Type": "heartbeat",
    }


async def test_one_subscriptions_messages_arrive_in_order_keyed_by_its_id(
    transport: KafkaQueueTransport, kafka_bootstrap: str
) -> None:
    topic = new_topic()
    for n in range(1, 6):
        for sub in ("sub-a", "sub-b"):
            one = delivery(
                f"kafka:{topic}",
                subscription_id=sub,
                body=f"{sub}#{n}".encode(),
                idempotency_key=f"{sub}:{n}",
            )
            assert (await transport.send(one)).ok

    records = await read_topic(kafka_bootstrap, topic, 10)
    by_key: dict[bytes, list[bytes]] = {}
    for record in records:
        assert headers(record)["Herald-Subscription"] == record.key.decode()
        by_key.setdefault(record.key, []).append(record.value)
    assert by_key == {
        sub.encode(): [f"{sub}#{n}".encode() for n in range(1, 6)] for sub in ("sub-a", "sub-b")
    }


async def test_concurrent_first_sends_share_one_producer(
    transport: KafkaQueueTransport, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[AIOKafkaProducer] = []

    class Counted(AIOKafkaProducer):
        def __init__(self, **config: object) -> None:
            super().__init__(**config)
            made.append(self)

    monkeypatch.setattr(queue_module, "AIOKafkaProducer", Counted)
    topic = new_topic()
    sends = [
        transport.send(delivery(f"kafka:{topic}", subscription_id=f"sub-{n}")) for n in range(8)
    ]
    outcomes = await asyncio.gather(*sends)
    assert all(outcome.ok for outcome in outcomes), outcomes
    assert len(made) == 1
    assert len(await read_topic(kafka_bootstrap, topic, 8)) == 8


async def test_too_large_message_is_refused_with_reason(transport: KafkaQueueTransport) -> None:
    topic = new_topic()
    outcome = await transport.send(delivery(f"kafka:{topic}", body=b"x" * 2_000_000))
    assert not outcome.ok and outcome.error is not None
    assert "too large" in outcome.error and repr(topic) in outcome.error
    assert (await transport.send(delivery(f"kafka:{topic}"))).ok  # the producer still works


async def test_endpoint_that_is_not_kafka_fails_without_connecting() -> None:
    queue = KafkaQueueTransport(f"127.0.0.1:{free_port()}")
    outcome = await queue.send(delivery("https://example.org/hook"))
    assert not outcome.ok and "not a Kafka queue endpoint" in (outcome.error or "")
    await queue.aclose()


async def test_unreachable_broker_fails_fast_naming_the_bootstrap() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    queue = KafkaQueueTransport(bootstrap)
    try:
        for _ in range(2):  # a failed start is cleaned up and tried again on the next send
            began = time.monotonic()
            outcome = await queue.send(delivery("kafka:notify.orders", timeout=2.0))
            assert time.monotonic() - began < 5.0
            assert not outcome.ok and outcome.status_code is None
            assert outcome.error is not None
            assert bootstrap in outcome.error and "HERALD_KAFKA_BOOTSTRAP" in outcome.error
            assert "'notify.orders'" in outcome.error
    finally:
        began = time.monotonic()
        await queue.aclose()
        assert time.monotonic() - began < 5.0


async def test_recovers_when_the_broker_comes_back(kafka_broker: KafkaBroker) -> None:
    if not kafka_broker.controllable:
        pytest.skip("external broker (HERALD_TEST_KAFKA_BOOTSTRAP) cannot be stopped")
    topic, bootstrap = new_topic(), kafka_broker.bootstrap
    queue = KafkaQueueTransport(bootstrap)
    try:
        await asyncio.to_thread(kafka_broker.stop)
        down = await queue.send(delivery(f"kafka:{topic}", timeout=2.0))
        assert not down.ok and bootstrap in (down.error or "")

        await asyncio.to_thread(kafka_broker.start)
        up = await queue.send(delivery(f"kafka:{topic}", idempotency_key="sub-1:2"))
        assert up.ok, up.error

        await asyncio.to_thread(kafka_broker.stop)
        lost = await queue.send(delivery(f"kafka:{topic}", idempotency_key="sub-1:3", timeout=2.0))
        assert not lost.ok and "did not acknowledge" in (lost.error or "")
        assert bootstrap in (lost.error or "") and repr(topic) in (lost.error or "")

        await asyncio.to_thread(kafka_broker.start)
        again = await queue.send(delivery(f"kafka:{topic}", idempotency_key="sub-1:4"))
        assert again.ok, again.error
    finally:
        await queue.aclose()

    keys = [headers(record)["Idempotency-Key"] for record in await read_topic(bootstrap, topic, 2)]
    if keys != ["sub-1:2", "sub-1:4"]:
        # sub-1:3 was not acknowledged but may still have been written: then before sub-1:4.
        records = await read_topic(bootstrap, topic, 3)
        keys = [headers(record)["Idempotency-Key"] for record in records]
        assert keys == ["sub-1:2", "sub-1:3", "sub-1:4"]
