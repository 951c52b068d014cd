"""Start a Herald runtime in this process and talk to its API over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from events.bus import Bus
from herald.app import create_app
from herald.runtime import Runtime
from herald.settings import Settings

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@asynccontextmanager
async def running_herald(
    database_url: str, *, bus: Bus | None = None, **settings: Any
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    config = Settings(database_url=database_url, relay_poll_seconds=0.05, **settings)
    runtime = Runtime(config, bus=bus)
    app = create_app(config, runtime=runtime)
    await runtime.start()
    try:
        # Like a real server: an unhandled error is a 500 response, not an exception here.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://herald.test/fhir", headers=FHIR_JSON
        ) as client:
            yield runtime, client
    finally:
        await runtime.stop()
