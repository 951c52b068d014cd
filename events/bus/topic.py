"""A topic as the code that publishes to it declares it: its name, the schema of its messages,
and what a reader needs to know (key, headers, order).

A publisher declares its topics on the bus (`Bus.declare`) before the bus starts. The Kafka bus
makes each one a FastStream publisher and writes only through those, so the AsyncAPI document
generated from them (`events.asyncapi`) lists every topic Herald writes, with its schema.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str  # as in `fhirstore.wire`, without the installation's namespace
    message: type[BaseModel]  # the JSON schema of a message's value
    description: str  # for readers: key, headers, order, who reads it


def record(declared: dict[str, TopicSpec], topic: TopicSpec) -> bool:
    """Add `topic` to `declared`; False when it is there already. Another declaration under
    the same name raises: a topic carries one kind of message."""
    known = declared.get(topic.name)
    if known is None:
        declared[topic.name] = topic
        return True
    if known != topic:
        raise ValueError(f"topic {topic.name!r} is declared twice, with different messages")
    return False
