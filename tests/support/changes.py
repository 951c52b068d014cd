"""Read `fhir.changes` as an integrator would (a plain aiokafka consumer), for stream tests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer


@dataclass(frozen=True)
class Seen:
    key: str
    event_id: str
    body: dict


async def read_changes(
    bootstrap: str, keys: set[str], *, expect: int, within: float = 60.0
) -> list[Seen]:
    """Read `fhir.changes` from the start until `expect` distinct events for `keys` arrived.

    Returns every record read for those keys, redeliveries included.
    """
    consumer = AIOKafkaConsumer(
        "fhir.changes",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen: list[Seen] = []
    distinct: set[str] = set()
    try:
        async with asyncio.timeout(within):
            while len(distinct) < expect:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        key = record.key.decode()
                        if key not in keys:
                            continue
                        headers = {k: v.decode() for k, v in record.headers}
                        event_id = headers["herald-event-id"]
                        distinct.add(event_id)
                        seen.append(Seen(key, event_id, json.loads(record.value)))
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return seen


def versions_by_key(seen: list[Seen]) -> dict[str, list[int]]:
    """Per key, the versions in the order they were read (duplicates kept)."""
    out: dict[str, list[int]] = {}
    for item in seen:
        out.setdefault(item.key, []).append(int(item.body["versionId"]))
    return out
