"""Leadership by PostgreSQL session advisory lock: one process of many does a job.

The outbox relay and the CarePlan scheduler's sweep each lead with one `Leadership` (their lock
keys are in `fhirstore/db/locks.py`):
- `lead()` waits until this process holds the lock, on a connection of its own, and holds it
  for the block. `Lead.check()` asks that connection whether it is still there (the lock lives
  as long as the session): the relay checks before every publish, so it never publishes after
  losing the lead. If the process dies or its connection drops, PostgreSQL releases the lock
  and another process takes it.
- `run()` keeps contending and, while leading, checks every `check_interval`; `leading` and
  `on_change` say how it stands (the scheduler sweeps only while leading).
On SQLite (one process per database file) this process always leads.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fhirstore.clock import Clock
from fhirstore.periodic import Periodic

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """The session holding the lock is gone: another process may lead now."""


class Lead:
    """This process's hold on the lock, for the length of a `Leadership.lead()` block."""

    def __init__(self, conn: AsyncConnection | None) -> None:
        self.connection = conn  # the session holding the lock (None on SQLite)

    async def check(self) -> None:
        """Raise `LeadershipLost` unless this process still holds the lock."""
        if self.connection is None:
            return
        try:
            await self.connection.execute(text("SELECT 1"))
            await self.connection.commit()
        except Exception as error:
            raise LeadershipLost(f"lost the database connection ({error})") from error

    async def listen(self, channel: str, callback: Callable[..., Any]) -> None:
        """LISTEN on the lock's session (PostgreSQL; nothing on SQLite), so that notifications
        stop when the lead does."""
        if self.connection is None:
            return
        driver = (await self.connection.get_raw_connection()).driver_connection
        if driver is None:  # the session is gone, and the lock with it
            raise LeadershipLost("lost the database connection")
        await driver.add_listener(channel, callback)


class Leadership:
    def __init__(
        self,
        engine: AsyncEngine,
        key: int,
        name: str,
        *,
        clock: Clock,
        retry_interval: float = 2.0,
        check_interval: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        """`retry_interval`: seconds between tries to take the lock; `check_interval`: between
        checks that it is still held (`run`)."""
        self._engine = engine
        self._key = key
        self._name = name
        self._clock = clock
        self._retry_interval = retry_interval
        self._check_interval = check_interval
        self._on_change = on_change
        self._postgres = engine.dialect.name == "postgresql"
        self.leading = not self._postgres

    @asynccontextmanager
    async def lead(self) -> AsyncIterator[Lead]:
        """Wait until this process holds the lock, and hold it for the block."""
        if not self._postgres:
            self._set(True)
            yield Lead(None)
            return
        async with self._engine.connect() as conn:
            while not await self._try_lock(conn):
                await self._clock.sleep(self._retry_interval)
            log.info("%s: this process now leads", self._name)
            self._set(True)
            try:
                yield Lead(conn)
            finally:
                self._set(False)
                with suppress(Exception):  # a dead connection has no lock left
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                    await conn.commit()

    async def run(self) -> None:
        """Contend for the lock until cancelled (returns at once on SQLite)."""
        if not self._postgres:
            self._set(True)
            return
        await Periodic(
            self._name,
            self._hold,
            interval=self._check_interval,
            clock=self._clock,
            failed=self._lost,
        ).run()

    async def _hold(self) -> None:
        async with self.lead() as lead:
            await Periodic(
                self._name,
                lead.check,
                interval=self._check_interval,
                clock=self._clock,
                first_pass_at_start=False,
                fatal=(LeadershipLost,),
            ).run()

    def _lost(self, error: Exception, retry_in: float) -> None:
        log.warning("%s: %s; trying again in %gs", self._name, error, retry_in)

    async def _try_lock(self, conn: AsyncConnection) -> bool:
        got = (
            await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})
        ).scalar_one()
        await conn.commit()
        return bool(got)

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            if self._on_change is not None:
                self._on_change(leading)
