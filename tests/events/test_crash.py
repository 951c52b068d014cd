"""SIGKILL the service mid-stream: after a restart every committed change is on `fhir.changes`.

Duplicates are allowed only as redeliveries of the same event (same event id).
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from fhirstore.db.schema import resource_versions
from tests.support.changes import read_changes, versions_by_key
from tests.support.process import HeraldProcess


async def _write(client: httpx.AsyncClient, base: str, pid: str, n: int) -> bool:
    body = {"resourceType": "Patient", "id": pid, "name": [{"family": f"V{n}"}]}
    try:
        response = await client.put(f"{base}/Patient/{pid}", json=body)
    except httpx.HTTPError:
        return False
    return response.status_code in (200, 201)


async def test_sigkill_mid_stream_loses_nothing(
    database_url: str, kafka_bootstrap: str, tmp_path
) -> None:
    url = database_url
    server = HeraldProcess(
        {"HERALD_DATABASE_URL": url, "HERALD_KAFKA_BOOTSTRAP": kafka_bootstrap},
        tmp_path / "herald.log",
    )
    ids = [f"k-{uuid.uuid4().hex[:12]}" for _ in range(4)]
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(headers={"Content-Type": "application/fhir+json"}) as client:
            for n in range(30):
                await asyncio.gather(*(_write(client, server.base, pid, n) for pid in ids))
            # Kill while writes are in flight.
            writes = [
                asyncio.create_task(_write(client, server.base, pid, 100 + n))
                for n in range(10)
                for pid in ids
            ]
            await asyncio.sleep(0.05)
            await asyncio.to_thread(server.kill)
            await asyncio.gather(*writes, return_exceptions=True)
            await asyncio.to_thread(server.start)
            for n in range(200, 210):
                await asyncio.gather(*(_write(client, server.base, pid, n) for pid in ids))
    finally:
        await asyncio.to_thread(server.stop)

    engine = create_async_engine(url)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(resource_versions.c.res_id, resource_versions.c.version_id).where(
                    resource_versions.c.res_id.in_(ids)
                )
            )
        ).all()
    await engine.dispose()
    committed: dict[str, set[int]] = {}
    for res_id, version in rows:
        committed.setdefault(f"Patient/{res_id}", set()).add(version)
    expected = sum(len(v) for v in committed.values())
    assert expected >= 4 * 40  # everything before the kill and after the restart committed

    await asyncio.to_thread(server.start)  # the relay finishes what it had not published
    try:
        seen = await read_changes(kafka_bootstrap, set(committed), expect=expected, within=60)
    finally:
        await asyncio.to_thread(server.stop)

    by_key = versions_by_key(seen)
    for key, versions in committed.items():
        assert set(by_key[key]) == versions, f"{key}: missing {versions - set(by_key[key])}"
        assert list(dict.fromkeys(by_key[key])) == sorted(versions)  # per-resource order
    event_ids: dict[tuple[str, int], set[str]] = {}
    for s in seen:
        event_ids.setdefault((s.key, int(s.body["versionId"])), set()).add(s.event_id)
    assert all(len(ids_) == 1 for ids_ in event_ids.values()), "a duplicate had a new event id"
