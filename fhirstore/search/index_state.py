"""Where the search index stands: which extraction version built it (`search_index_state`),
how far a rebuild has come, and the refusal of searches it cannot answer yet.

`require_index` runs before every database search (`sql.run_search`). Once it has seen an
index built by this Herald's `INDEX_VERSION`, it remembers that for the engine and costs
nothing more; while the index is older, each search whose criteria need rows the older
extraction did not write (`index_version.unindexed`) reads the state row again (one row) and,
if still older, is refused with a 503 naming the parameter, the progress and `herald reindex`.
Searches the older rows answer faithfully are served meanwhile.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import false, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore.db.schema import resources, search_index_state
from fhirstore.errors import FhirError
from fhirstore.search.index_version import INDEX_VERSION, unindexed
from fhirstore.search.query import Criterion

STATE_ID = 1
# Engines whose index this process has seen built by INDEX_VERSION (it never goes back).
_CURRENT: weakref.WeakSet[Engine] = weakref.WeakSet()


class IndexRebuilding(FhirError):
    """A search that needs index rows the stored resources do not have yet."""

    status = 503
    code = "transient"


@dataclass(frozen=True, slots=True)
class IndexState:
    """The `search_index_state` row."""

    built_by: int
    building: int | None = None
    after: tuple[str, str] | None = None  # the rebuild's cursor
    done: int = 0
    total: int = 0

    @property
    def current(self) -> bool:
        return self.built_by >= INDEX_VERSION


async def read_state(conn: AsyncConnection, *, lock: bool = False) -> IndexState:
    """The state row (`lock`: locked until the transaction ends, PostgreSQL). The migrations
    always write one; a schema made without them (`metadata.create_all`, as some tests do)
    has none, and its rows can only have been written by this version."""
    s = search_index_state.c
    query = select(s.built_by, s.building, s.after_type, s.after_id, s.done, s.total).where(
        s.id == STATE_ID
    )
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        return IndexState(built_by=INDEX_VERSION)
    after = (row.after_type, row.after_id) if row.after_type is not None else None
    return IndexState(row.built_by, row.building, after, row.done, row.total)


async def write_state(conn: AsyncConnection, state: IndexState) -> None:
    after_type, after_id = state.after or (None, None)
    await conn.execute(
        update(search_index_state)
        .where(search_index_state.c.id == STATE_ID)
        .values(
            built_by=state.built_by,
            building=state.building,
            after_type=after_type,
            after_id=after_id,
            done=state.done,
            total=state.total,
        )
    )


async def stamp_if_empty(conn: AsyncConnection) -> None:
    """Record an index of this version for a database with no live resource (nothing to
    rebuild: a new database, or one whose resources are all deleted)."""
    state = await read_state(conn, lock=True)
    if state.current:
        return
    r = resources.c
    live = await conn.execute(select(r.res_id).where(r.deleted == false()).limit(1))
    if live.first() is None:
        await write_state(conn, IndexState(built_by=INDEX_VERSION))


def seen_current(conn: AsyncConnection) -> None:
    """Remember that `conn`'s database has an index of this version (no more checks)."""
    _CURRENT.add(conn.sync_engine)


async def require_index(conn: AsyncConnection, criteria: Sequence[Criterion]) -> None:
    """Refuse (`IndexRebuilding`) criteria the stored index cannot answer faithfully yet."""
    if conn.sync_engine in _CURRENT:
        return
    if unindexed(criteria, 1) is None:  # needs nothing any version added
        return
    state = await read_state(conn)
    if state.current:
        seen_current(conn)
        return
    found = unindexed(criteria, state.built_by)
    if found is None:
        return
    criterion, what = found
    raise IndexRebuilding(
        f"Search parameter '{criterion.param.code}': {what} cannot be searched until the "
        f"search index is rebuilt for this version of Herald ({_progress(state)}); other "
        "searches are served meanwhile. Retry once it is done; an administrator can follow it "
        "or run it with `herald reindex`",
        expression=[criterion.param.code],
    )


def _progress(state: IndexState) -> str:
    if state.building is None:
        return "not started"
    return f"{state.done} of about {state.total} resources done"


async def index_current(conn: AsyncConnection) -> bool:
    """Whether `conn`'s database has an index built by this version (remembered once seen)."""
    if conn.sync_engine in _CURRENT:
        return True
    if (await read_state(conn)).current:
        seen_current(conn)
        return True
    return False
