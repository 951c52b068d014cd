"""Start a Herald runtime in this process and talk to its API (over ASGI or real HTTP), alone
or as a factory in one of its shapes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from events.bus import Bus
from events.bus.kafka import KafkaBus
from fhirstore.clock import Clock
from fhirstore.db.schema import outbox, resources
from herald.app import create_app
from herald.runtime import Runtime
from herald.settings import Settings
from tests.support.databases import fresh_database_url, sqlite_url
from tests.support.serving import serving

FHIR_JSON = {"Content-Type": "application/fhir+json"}

Running = tuple[Runtime, httpx.AsyncClient]
HeraldFactory = Callable[..., AbstractAsyncContextManager[Running]]


@asynccontextmanager
async def running_herald(
    database_url: str,
    *,
    bus: Bus | None = None,
    served: bool = False,
    clock: Clock | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A started Herald and a client of its FHIR API: over ASGI in this process, or (`served`)
    over real HTTP from uvicorn on 127.0.0.1 (for WebSocket clients: `client.base_url`)."""
    config = Settings(database_url=database_url, relay_poll_seconds=0.05, **settings)
    runtime = Runtime(config, bus=bus, clock=clock)
    app = create_app(config, runtime=runtime)
    await runtime.start()
    try:
        if served:
            async with (
                serving(app) as port,
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}/fhir", headers=FHIR_JSON, timeout=30
                ) as client,
            ):
                yield runtime, client
        else:
            # Like a real server: an unhandled error is a 500 response, not an exception here.
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://herald.test/fhir", headers=FHIR_JSON
            ) as client:
                yield runtime, client
    finally:
        await runtime.stop()


def herald_factory(
    database_url: str,
    kafka_bootstrap: str | None = None,
    *,
    clock: Clock | None = None,
    **defaults: Any,
) -> HeraldFactory:
    """`async with factory(**settings) as (runtime, client)`: `running_herald` on `database_url`
    with `defaults` under `settings`; on a Kafka bus with a namespace of its own when
    `kafka_bootstrap` is given (each start a new process of one installation), else in-process."""
    namespace = f"t{uuid.uuid4().hex[:8]}."

    @asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[Running]:
        bus = KafkaBus(kafka_bootstrap, namespace=namespace) if kafka_bootstrap else None
        async with running_herald(
            database_url, bus=bus, clock=clock, **{**defaults, **settings}
        ) as running:
            yield running

    return start


def shape_factory(
    request: pytest.FixtureRequest,
    shape: str,
    folder: Path,
    *,
    clock: Clock | None = None,
    **defaults: Any,
) -> HeraldFactory:
    """`herald_factory` in `shape`: "embedded" (a SQLite file in `folder`, in-process bus) or
    "kafka" (a fresh PostgreSQL database and the suite's Kafka broker)."""
    if shape == "embedded":
        return herald_factory(sqlite_url(folder), clock=clock, **defaults)
    url = fresh_database_url(request, "postgres", folder)
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    return herald_factory(url, bootstrap, clock=clock, **defaults)


async def stored_counts(runtime: Runtime) -> tuple[int, int]:
    """(resources, change events) in the database: both unchanged after a refused request."""
    async with runtime.engine.connect() as conn:
        counts = [
            (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            for t in (resources, outbox)
        ]
    return counts[0], counts[1]


def crash_writes_of_gender(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, gender: str = "unknown"
) -> None:
    """Make the store's batch writes fail unexpectedly for resources with this `gender`."""
    write_batch = runtime.store.write_batch

    async def crashing(conn, writes):  # type: ignore[no-untyped-def]
        if any((w.body or {}).get("gender") == gender for w in writes):
            raise RuntimeError("simulated driver failure")
        return await write_batch(conn, writes)

    monkeypatch.setattr(runtime.store, "write_batch", crashing)
