"""Rebuilding the search index for this Herald's extraction (`INDEX_VERSION`): every live
resource's `search_index` rows written again, in batches, while Herald runs.

How it stays right beside writers and other rebuilds:
- A batch is read (type, id, version, body) in primary key order after the cursor and its rows
  extracted on a worker thread, outside any transaction. Then, in one write transaction: the
  cursor is read again (locked on PostgreSQL; SQLite's BEGIN IMMEDIATE holds every writer
  back), and if another rebuild moved it, this batch is dropped and the rebuild goes on from
  there; each resource's version is read again (locked on PostgreSQL), and only the resources
  still at the version that was extracted get their rows replaced. A resource written
  meanwhile keeps the rows its write made, by this Herald's extraction; an older extraction
  never overwrites a newer write.
- The cursor and the count done commit with the batch, so a rebuild stopped at any point
  (crash, Ctrl-C, a stopped process) resumes after the last committed batch.
- A resource created or updated behind the cursor was indexed by its own write; one ahead of
  it is rebuilt when the cursor gets there. When the cursor reaches the end, the state records
  the index as built by `INDEX_VERSION` and the searches refused meanwhile are served
  (`fhirstore.search.index_state`).
Not covered: a process of an older Herald still writing during a rolling upgrade writes rows
of its own version; finish the rollout first (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from sqlalchemy import delete, false, func, select, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore.db.schema import resources, search_index
from fhirstore.db.upsert import insert_rows
from fhirstore.db.writer import INDEX_COLUMNS, ids_by_type, index_rows
from fhirstore.search.index_state import IndexState, read_state, write_state
from fhirstore.search.index_version import INDEX_VERSION
from fhirstore.store import Store

Key = tuple[str, str]
_T = TypeVar("_T")
BATCH_SIZE = 200
_DEADLOCK = "40P01"  # PostgreSQL SQLSTATE deadlock_detected
_DEADLOCK_TRIES = 3


@dataclass(slots=True)
class RebuildProgress:
    """How a rebuild stands, after each committed batch."""

    version: int  # the extraction version being written
    done: int  # live resources behind the cursor (earlier runs of this rebuild included)
    total: int  # live resources when this run started
    rewritten: int = 0  # resources whose rows this run replaced
    skipped: int = 0  # written while their batch was extracted: their write indexed them
    resumed: bool = False  # this run continued a rebuild an earlier one left
    finished: bool = False


@dataclass(frozen=True, slots=True)
class _Stored:
    key: Key
    version_id: int
    body: str


class Reindex:
    """Rebuilds the search index of `store`'s database (see the module docstring)."""

    def __init__(self, store: Store, *, batch_size: int = BATCH_SIZE) -> None:
        self._store = store
        self._batch_size = batch_size

    async def state(self) -> IndexState:
        async with self._store.engine.connect() as conn:
            return await read_state(conn)

    async def needed(self) -> bool:
        """Whether the index was built by an older extraction (or a rebuild is unfinished)."""
        state = await self.state()
        return not _newer(state) and (not state.current or state.building is not None)

    async def run(
        self, on_batch: Callable[[RebuildProgress], None] | None = None, *, force: bool = False
    ) -> RebuildProgress | None:
        """Rebuild (or resume rebuilding) until every live resource is done; None when the
        index is already of this version and `force` is not set, or of a newer version.
        `on_batch` hears of each committed batch."""
        started = await self._begin(force=force)
        if started is None:
            return None
        progress, after = started
        while True:
            batch = await self._next(after)
            if not batch:
                progress.finished = await self._finish(after)
                return progress
            rows = await asyncio.to_thread(_extract, batch)
            commit = functools.partial(self._commit, batch, rows, after, progress)
            moved = await _retry_deadlocks(commit)
            if moved is not None:  # another rebuild is ahead: go on from its cursor
                if moved.building != INDEX_VERSION:
                    return progress  # finished by the other, or taken over by a newer version
                after, progress.done = moved.after, moved.done
                continue
            after = batch[-1].key
            if on_batch is not None:
                on_batch(progress)

    async def _begin(self, *, force: bool) -> tuple[RebuildProgress, Key | None] | None:
        async with self._store.bookkeeping_transaction() as conn:
            state = await read_state(conn, lock=True)
            if _newer(state) or (state.current and state.building is None and not force):
                return None
            total = await _count_live(conn)
            resumed = state.building == INDEX_VERSION
            after = state.after if resumed else None
            done = await _count_live(conn, through=after) if after is not None else 0
            await write_state(conn, IndexState(state.built_by, INDEX_VERSION, after, done, total))
        return RebuildProgress(INDEX_VERSION, done, total, resumed=resumed), after

    async def _next(self, after: Key | None) -> list[_Stored]:
        r = resources.c
        query = (
            select(r.res_type, r.res_id, r.version_id, r.body)
            .where(r.deleted == false())
            .order_by(r.res_type, r.res_id)
            .limit(self._batch_size)
        )
        if after is not None:
            query = query.where(tuple_(r.res_type, r.res_id) > tuple_(*after))
        async with self._store.engine.connect() as conn:
            found = await conn.execute(query)
            return [_Stored((t, i), v, b) for t, i, v, b in found if b is not None]

    async def _commit(
        self,
        batch: list[_Stored],
        rows: dict[Key, list[tuple[Any, ...]]],
        after: Key | None,
        progress: RebuildProgress,
    ) -> IndexState | None:
        """Replace the rows of the batch's unchanged resources and move the cursor past it;
        the state found instead when another rebuild moved the cursor first."""
        async with self._store.bookkeeping_transaction() as conn:
            state = await read_state(conn, lock=True)
            if state.building != INDEX_VERSION or state.after != after:
                return state
            now = await _versions(conn, [stored.key for stored in batch])
            kept = [s.key for s in batch if now.get(s.key) == s.version_id]
            s = search_index.c
            for resource_type, ids in ids_by_type(kept).items():
                await conn.execute(
                    delete(search_index).where(s.res_type == resource_type, s.res_id.in_(ids))
                )
            await insert_rows(
                conn, search_index, INDEX_COLUMNS, [row for key in kept for row in rows[key]]
            )
            done = state.done + len(batch)
            await write_state(conn, dataclasses.replace(state, after=batch[-1].key, done=done))
        progress.done = done
        progress.rewritten += len(kept)
        progress.skipped += len(batch) - len(kept)
        return None

    async def _finish(self, after: Key | None) -> bool:
        """Record the index as built by this version, unless another rebuild did first."""
        async with self._store.bookkeeping_transaction() as conn:
            state = await read_state(conn, lock=True)
            if state.building != INDEX_VERSION or state.after != after:
                return False
            await write_state(conn, IndexState(INDEX_VERSION, done=state.done, total=state.done))
        return True


def _newer(state: IndexState) -> bool:
    """Whether a newer Herald built the index or is rebuilding it: an older extraction never
    writes over its rows (a rollback of the code, or a rolling upgrade's old processes)."""
    return state.built_by > INDEX_VERSION or (state.building or 0) > INDEX_VERSION


async def _retry_deadlocks(commit: Callable[[], Awaitable[_T]]) -> _T:
    """`commit()`, again when PostgreSQL chose it as a deadlock's victim (a Bundle write
    locking the same resources in another order): nothing of it was written."""
    for attempt in range(1, _DEADLOCK_TRIES + 1):
        try:
            return await commit()
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != _DEADLOCK or attempt == _DEADLOCK_TRIES:
                raise
    raise AssertionError("unreachable")


def _extract(batch: list[_Stored]) -> dict[Key, list[tuple[Any, ...]]]:
    """Each resource's index rows (on a worker thread: extraction is CPU work)."""
    return {stored.key: index_rows(*stored.key, orjson.loads(stored.body)) for stored in batch}


async def _count_live(conn: AsyncConnection, *, through: Key | None = None) -> int:
    r = resources.c
    query = select(func.count()).select_from(resources).where(r.deleted == false())
    if through is not None:
        query = query.where(tuple_(r.res_type, r.res_id) <= tuple_(*through))
    return int((await conn.execute(query)).scalar_one())


async def _versions(conn: AsyncConnection, keys: list[Key]) -> dict[Key, int]:
    """The current version of each live resource of `keys`, locked in key order until the
    transaction ends (PostgreSQL), so no write slips in between this check and the rows."""
    r = resources.c
    found: dict[Key, int] = {}
    for resource_type, ids in ids_by_type(keys).items():
        query = (
            select(r.res_id, r.version_id)
            .where(r.res_type == resource_type, r.res_id.in_(ids), r.deleted == false())
            .order_by(r.res_id)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        for res_id, version_id in await conn.execute(query):
            found[(resource_type, res_id)] = version_id
    return found
