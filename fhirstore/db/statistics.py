"""Planner statistics kept up with bulk writes (PostgreSQL).

PostgreSQL plans each query from table statistics that autovacuum refreshes in the background,
at most about once a minute per table. A bulk write (the first materialisation of thousands of
CarePlans) grows its tables many times over within that minute, and a writer that also reads
what it wrote is then planned from statistics of a nearly empty table: 500 Task ids looked up
by primary key became a scan of every Task (10,000 CarePlans took 160 s instead of 60 s). So a
bulk writer counts what it writes and analyzes the tables itself each time they may have
doubled since it last did. SQLite plans without statistics here: nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from fhirstore.db.schema import resource_versions, resources, search_index

log = logging.getLogger(__name__)

FIRST_AFTER = 10_000  # resources written before the first ANALYZE


class BulkStatistics:
    """Counts the resources one bulk write wrote; analyzes the store's resource tables and the
    writer's own `tables` after `FIRST_AFTER` of them, then whenever the count has doubled (a
    handful of ANALYZEs for any size of write)."""

    def __init__(self, engine: AsyncEngine, tables: Sequence[Table] = ()) -> None:
        self._engine = engine
        every = (resources, resource_versions, search_index, *tables)
        self._names = ", ".join(t.name for t in every)
        self._written = 0
        self._next = FIRST_AFTER

    async def written(self, resources: int) -> None:
        self._written += resources
        if self._engine.dialect.name != "postgresql" or self._written < self._next:
            return
        self._next = 2 * self._written
        try:
            async with self._engine.begin() as conn:
                await conn.execute(text(f"ANALYZE {self._names}"))
        except Exception:  # statistics only make queries faster; never fail the writer
            log.warning(
                "ANALYZE %s failed; queries may be planned from stale statistics",
                self._names,
                exc_info=True,
            )
