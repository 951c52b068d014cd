"""Helpers for change-stream tests: a plain aiokafka reader, as an integrator would write it."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Each stream test runs on the embedded database and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/h.db"
    return request.getfixturevalue("fresh_database")(f"stream_{uuid.uuid4().hex[:8]}")


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
