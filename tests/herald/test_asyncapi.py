"""`herald asyncapi` documents exactly the topics and consumer groups Herald's code uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from events.bus import BatchHandler, Handler, Message, TopicSpec
from events.bus.memory import MemoryBus
from fhirstore.wire import (
    CHANGES_TOPIC,
    DISPATCHER_GROUP,
    HERALD_TOPICS,
    MATCHER_GROUP,
    NOTIFICATIONS_TOPIC,
    QUEUE_TOPIC,
    SCHEDULER_GROUP,
    WEBSOCKET_TOPIC,
)
from herald.asyncapi import herald_asyncapi
from tests.e2e.delivery.conftest import subscribe, subscription
from tests.support.herald import running_herald
from tests.support.receiver import http_receiver

BROADCAST = "broadcast"  # no consumer group: every process reads


def _sent(document: dict[str, Any]) -> dict[str, Any]:
    """Address -> payload schema of every topic the document says Herald writes."""
    return {
        document["channels"][_channel(op)]["address"]: _payload(document, _channel(op))
        for op in document["operations"].values()
        if op["action"] == "send"
    }


def _received(document: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """(address, consumer group) -> payload schema of every topic Herald reads."""
    return {
        (document["channels"][_channel(op)]["address"], key.rpartition("/")[2]): _payload(
            document, _channel(op)
        )
        for key, op in document["operations"].items()
        if op["action"] == "receive"
    }


def _channel(operation: dict[str, Any]) -> str:
    return unquote(operation["channel"]["$ref"].rpartition("/")[2])


def _payload(document: dict[str, Any], channel: str) -> Any:
    [ref] = document["channels"][channel]["messages"].values()
    return document["components"]["messages"][unquote(ref["$ref"].rpartition("/")[2])]["payload"]


async def test_the_document_lists_every_topic_and_group_herald_uses_and_no_other() -> None:
    document = await herald_asyncapi()

    sent = _sent(document)
    assert set(sent) == HERALD_TOPICS | {QUEUE_TOPIC}
    assert set(_received(document)) == {
        (CHANGES_TOPIC, MATCHER_GROUP),
        (CHANGES_TOPIC, SCHEDULER_GROUP),
        (NOTIFICATIONS_TOPIC, DISPATCHER_GROUP),
        (WEBSOCKET_TOPIC, BROADCAST),
    }
    # A reader of a topic reads what its writer declared, with the schema in the document.
    for (topic, _), payload in _received(document).items():
        assert payload == sent[topic]
    schemas = document["components"]["schemas"]
    assert {"ChangeEvent", "NotificationJob", "NotificationBundle"} <= set(schemas)
    assert "EmptyPayload" not in schemas
    assert {"eventId", "sequence", "resourceType", "interaction"} <= set(
        schemas["ChangeEvent"]["properties"]
    )
    assert {"subscriptionId", "eventNumber", "retryNow"} <= set(
        schemas["NotificationJob"]["properties"]
    )


class RecordingBus(MemoryBus):
    """The in-process bus, noting what the running code declares, publishes and reads."""

    def __init__(self) -> None:
        super().__init__()
        self.declared: set[str] = set()
        self.published: set[str] = set()
        self.read: set[tuple[str, str]] = set()

    def declare(self, topic: TopicSpec) -> None:
        super().declare(topic)
        self.declared.add(topic.name)

    def subscribe(self, topic: str, group: str, handler: Handler) -> None:
        super().subscribe(topic, group, handler)
        self.read.add((topic, group))

    def subscribe_batch(self, topic: str, group: str, handler: BatchHandler) -> None:
        super().subscribe_batch(topic, group, handler)
        self.read.add((topic, group))

    def subscribe_broadcast(self, topic: str, handler: BatchHandler) -> None:
        super().subscribe_broadcast(topic, handler)
        self.read.add((topic, BROADCAST))

    async def publish(self, messages: Sequence[Message]) -> None:
        self.published.update(m.topic for m in messages)
        await super().publish(messages)


async def test_what_a_running_herald_publishes_and_reads_is_in_the_document(
    tmp_path: Path,
) -> None:
    document = await herald_asyncapi()
    bus = RecordingBus()
    async with (
        http_receiver() as receiver,
        running_herald(f"sqlite+aiosqlite:///{tmp_path}/h.db", bus=bus) as (_, client),
    ):
        await subscribe(client, subscription(receiver.url))  # a handshake: a notification job
        created = await client.post("/Patient", json={"resourceType": "Patient"})
        assert created.status_code == 201
        await receiver.wait_for(2)  # the handshake and the event: the jobs were read

    assert {CHANGES_TOPIC, NOTIFICATIONS_TOPIC} <= bus.published
    assert bus.published <= set(_sent(document))
    assert bus.declared == set(_sent(document)) - {QUEUE_TOPIC}  # the queue has its own producer
    assert bus.read == set(_received(document))
