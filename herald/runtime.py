"""The running parts of one Herald process, built from settings and started in order.

`Runtime` owns the engine, the store, the bus and the background workers (today the outbox
relay; later the matcher, dispatchers and scheduler). `herald serve` runs the API with all of
them; `herald relay` runs only the relay, so each part can be scaled on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from events.bus import Bus
from events.bus.kafka import KafkaBus
from events.bus.memory import MemoryBus
from events.relay import OutboxRelay
from fhirstore.clock import Clock, SystemClock
from fhirstore.db.engine import create_engine
from fhirstore.db.migrate import upgrade
from fhirstore.store import Store
from herald.settings import Settings

log = logging.getLogger(__name__)


def make_bus(settings: Settings) -> Bus:
    if settings.kafka_bootstrap:
        return KafkaBus(settings.kafka_bootstrap)
    return MemoryBus()


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        bus: Bus | None = None,
        run_relay: bool = True,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.engine = create_engine(settings.database_url)
        self.store = Store(self.engine, self.clock)
        self.bus = bus or make_bus(settings)
        self.relay = OutboxRelay(
            self.store,
            self.bus,
            batch_size=settings.relay_batch_size,
            poll_interval=settings.relay_poll_seconds,
            retention=timedelta(hours=settings.outbox_retention_hours),
        )
        self._run_relay = run_relay
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    async def start(self) -> None:
        await upgrade(self.engine)
        await self.bus.start()
        if self._run_relay:
            self.store.add_commit_listener(self.relay.wake)
            self._spawn("outbox-relay", self.relay.run)
        self.ready = True
        log.info(
            "herald started",
            extra={
                "database": self.engine.url.render_as_string(hide_password=True),
                "bus": "kafka " + self.settings.kafka_bootstrap
                if self.settings.kafka_bootstrap
                else "in-process",
            },
        )

    def _spawn(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        async def guarded() -> None:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s stopped with an error", name)
                self.ready = False
                raise

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def stop(self) -> None:
        self.ready = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.bus.stop()
        await self.engine.dispose()
