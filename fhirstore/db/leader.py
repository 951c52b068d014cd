"""Leadership by PostgreSQL session advisory lock: one process of many does a job.

`Leadership.run` keeps trying to take the lock on a connection of its own and, once it has it,
checks every `check_interval` that the connection (and so the lock) is still there. If the
process dies or its connection drops, PostgreSQL releases the lock and another process takes it.
On SQLite (one process per database file) this process always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)


class Leadership:
    def __init__(
        self,
        engine: AsyncEngine,
        key: int,
        name: str,
        *,
        check_interval: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._engine = engine
        self._key = key
        self._name = name
        self._interval = check_interval
        self._on_change = on_change
        self.leading = engine.dialect.name != "postgresql"

    async def run(self) -> None:
        """Contend for the lock until cancelled (returns at once on SQLite)."""
        if self._engine.dialect.name != "postgresql":
            self._set(True)
            return
        while True:
            try:
                await self._hold()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: lost the database connection (%s); trying again", self._name, exc)
            finally:
                self._set(False)
            await asyncio.sleep(self._interval)

    async def _hold(self) -> None:
        async with self._engine.connect() as conn:
            while True:
                got = (
                    await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})
                ).scalar_one()
                await conn.commit()
                if got:
                    break
                await asyncio.sleep(self._interval)
            log.info("%s: this process now leads", self._name)
            self._set(True)
            try:
                while True:
                    await asyncio.sleep(self._interval)
                    await conn.execute(text("SELECT 1"))
                    await conn.commit()
            finally:
                with contextlib.suppress(Exception):  # a dead connection has no lock left
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                    await conn.commit()

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            if self._on_change is not None:
                self._on_change(leading)
