"""The store's reads: read, vread, versions, history and search, each inside `access`.

What `access` (`fhirstore.access.boundary`) may not read is, on every read, what does not
exist: a read or history of it answers exactly as for a missing id (404), decided in SQL from
the search index, never from the body (docs/access.md); searches are narrowed in SQL.
`access=None` is Herald itself: not narrowed. `Store` (fhirstore/store.py) adds the writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fhirstore.access.boundary import Access, Reach
from fhirstore.access.narrowing import Narrowing, reach_clause
from fhirstore.db.deadline import query_deadline
from fhirstore.db.schema import resource_versions, resources
from fhirstore.db.writer import last_live_body
from fhirstore.errors import Forbidden, Gone, NotFound
from fhirstore.search.limits import SearchLimits
from fhirstore.search.page import BodySize, Budget
from fhirstore.search.query import SearchRequest
from fhirstore.search.sql import SearchResult, run_search
from fhirstore.stored import StoredVersion, current_in, version_of, versions_in
from fhirstore.validation import require_type

# Appended to "does not exist": a narrowed principal learns nothing about what it may not read.
OR_OUTSIDE = " (or is outside what this token may read)"
_HISTORY_CHUNK = 500  # versions read at a time when each must be judged against a reach


class StoreReads:
    """The reading half of `Store`."""

    engine: AsyncEngine
    search_limits: SearchLimits  # every client's search and history request

    async def read(
        self, resource_type: str, resource_id: str, *, access: Access | None = None
    ) -> StoredVersion:
        require_type(resource_type)
        reach = access.reach(resource_type, "r") if access is not None else None
        async with self.engine.connect() as conn:
            return await self._read_in(conn, resource_type, resource_id, reach)

    async def _read_in(
        self,
        conn: AsyncConnection,
        resource_type: str,
        resource_id: str,
        reach: Reach | None = None,
    ) -> StoredVersion:
        """The current version, if `reach` admits it: judged in SQL from the search index, so
        a resource outside it is answered like a missing one, and as fast, whatever its size
        (its body is never read)."""
        r = resources.c
        query = select(resources).where(and_(r.res_type == resource_type, r.res_id == resource_id))
        inside = reach_clause(reach, resources) if reach is not None else None
        if inside is not None:
            query = query.where(inside)
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"{resource_type}/{resource_id} does not exist{OR_OUTSIDE}")
        if row.deleted:
            raise Gone(f"{resource_type}/{resource_id} was deleted (version {row.version_id})")
        return StoredVersion(
            resource_type, resource_id, row.version_id, row.last_updated, "", row.body
        )

    async def vread(
        self,
        resource_type: str,
        resource_id: str,
        version_id: int,
        *,
        access: Access | None = None,
    ) -> StoredVersion:
        require_type(resource_type)
        reach = access.reach(resource_type, "r") if access is not None else None
        async with self.engine.connect() as conn:
            # The resource as it is now must be inside (from the index, as `read`), and the
            # version too (from its body, only once the resource is known to be readable).
            if reach is not None and not await _current_inside(conn, reach, resource_id):
                raise NotFound(
                    f"{resource_type}/{resource_id} has no version {version_id}{OR_OUTSIDE}"
                )
            row = (
                await conn.execute(
                    select(resource_versions).where(
                        and_(
                            resource_versions.c.res_type == resource_type,
                            resource_versions.c.res_id == resource_id,
                            resource_versions.c.version_id == version_id,
                        )
                    )
                )
            ).first()
            if row is None or not await _admitted(conn, reach, row):
                raise NotFound(
                    f"{resource_type}/{resource_id} has no version {version_id}{OR_OUTSIDE}"
                )
        version = version_of(row)
        if version.deleted:
            raise Gone(f"{resource_type}/{resource_id} version {version_id} is a deletion")
        return version

    async def versions(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], StoredVersion]:
        """Many versions at once, by (type, id, versionId); those that do not exist are left
        out, deletions are included (`deleted`)."""
        async with self.engine.connect() as conn:
            return await versions_in(conn, keys)

    async def current_versions(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredVersion]:
        """The current version of each (type, id) at once, on one connection (a query per
        type); those that never existed are left out, deletions are included (`deleted`).
        Not narrowed: Herald's own read (the matcher judges each owner's reach in memory)."""
        ids_of: dict[str, list[str]] = {}
        for resource_type, resource_id in keys:
            ids_of.setdefault(resource_type, []).append(resource_id)
        found: dict[tuple[str, str], StoredVersion] = {}
        async with self.engine.connect() as conn:
            for resource_type, ids in ids_of.items():
                for resource_id, version in (await current_in(conn, resource_type, ids)).items():
                    found[resource_type, resource_id] = version
        return found

    async def history(
        self,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        since: datetime | None = None,
        count: int = 50,
        offset: int = 0,
        access: Access | None = None,
    ) -> tuple[list[StoredVersion], int]:
        """Versions newest first, and how many there are in all. The page holds the first of
        `count` versions whose bodies fit `search_limits.max_page_bytes` (the first always; only
        their bodies are read): the next page starts after the last one returned.

        Narrowed by `access`: versions of resources now outside it are not counted or listed,
        and of the others only versions inside it are listed (a resource that moved into a
        patient's compartment shows that patient its versions from then on).
        """
        reach = _history_reach(access, resource_type, resource_id)
        conds = []
        if resource_type is not None:
            require_type(resource_type)
            conds.append(resource_versions.c.res_type == resource_type)
        if resource_id is not None:
            conds.append(resource_versions.c.res_id == resource_id)
        if since is not None:
            conds.append(resource_versions.c.last_updated >= since)
        narrowed = reach_clause(reach, resource_versions) if reach is not None else None
        if narrowed is not None:
            conds.append(narrowed)
        if resource_type is None and access is not None and not access.principal.admin:
            # Subscriptions are their owners' alone, whatever a `*` scope says.
            conds.append(resource_versions.c.res_type != "Subscription")
        where = and_(*conds) if conds else None
        v = resource_versions.c
        order = (v.last_updated.desc(), v.version_id.desc(), v.res_type, v.res_id)
        query = select(resource_versions).order_by(*order)
        sized = select(v.res_type, v.res_id, v.version_id, BodySize(v.body)).order_by(*order)
        counter = select(func.count()).select_from(resource_versions)
        if where is not None:
            query, sized = query.where(where), sized.where(where)
            counter = counter.where(where)
        budget = Budget(self.search_limits)
        async with (
            self.engine.connect() as conn,
            query_deadline(conn, self.search_limits.timeout_seconds),
        ):
            if reach is None or reach.everything:
                taken = await _sized_page(conn, sized.limit(count).offset(offset), budget)
                found = await versions_in(conn, taken)
                page = [found[key] for key in taken if key in found]
                total = (await conn.execute(counter)).scalar_one()
            else:
                rows, total = await _admitted_page(conn, reach, query, count, offset, budget)
                page = [version_of(r) for r in rows]
        if (
            resource_id is not None
            and total == 0
            and (
                since is None
                or narrowed is not None
                or not await self._ever(resource_type, resource_id)
            )
        ):
            raise NotFound(f"{resource_type}/{resource_id} does not exist{OR_OUTSIDE}")
        return page, total

    async def _ever(self, resource_type: str | None, resource_id: str) -> bool:
        """Whether any version of the resource was ever stored."""
        async with self.engine.connect() as conn:
            row = await conn.execute(
                select(resources.c.version_id).where(
                    and_(resources.c.res_type == resource_type, resources.c.res_id == resource_id)
                )
            )
            return row.first() is not None

    async def search(self, request: SearchRequest, *, access: Access | None = None) -> SearchResult:
        narrowing = None
        if access is not None:
            narrowing = Narrowing(access.reach(request.resource_type, "s"), access)
        async with self.engine.connect() as conn:
            return await run_search(conn, request, narrowing)


def _history_reach(
    access: Access | None, resource_type: str | None, resource_id: str | None
) -> Reach | None:
    """What a history request may list: an instance's needs read, a type's search, and the
    whole server's a scope on every type (`*`) that is not narrowed to a patient."""
    if access is None:
        return None
    if resource_type is None:
        reach = access.may("*", "s")
        if reach is None or not reach.everything:
            raise Forbidden(
                "this token may not read the history of the whole server: that needs an "
                "administrator or a system/*.s or user/*.s scope; ask for the history of one "
                "type instead ([base]/Type/_history)"
            )
        access.granted.append(reach)
        return reach
    return access.reach(resource_type, "r" if resource_id is not None else "s")


async def _sized_page(
    conn: AsyncConnection, sized: Select[Any], budget: Budget
) -> list[tuple[str, str, int]]:
    """The keys of the versions in `sized` (type, id, version, body size) that fit `budget`,
    in order, stopping at the first that does not: the next page starts right after them."""
    taken: list[tuple[str, str, int]] = []
    for res_type, res_id, version_id, size in await conn.execute(sized):
        if not budget.take_match(size or 0, first=not taken):
            break
        taken.append((res_type, res_id, version_id))
    return taken


async def _admitted_page(
    conn: AsyncConnection,
    reach: Reach,
    query: Select[Any],
    count: int,
    offset: int,
    budget: Budget,
) -> tuple[list[Any], int]:
    """The page of `query`'s versions that are inside `reach`, and how many there are in all.
    Each version is judged by its own body, so a resource's versions from before it entered a
    patient's compartment are neither listed nor counted, and pages are full (up to `budget`'s
    bytes; a page cut short by them ends there). Reads them all, a chunk at a time: what a
    narrowed reach sees is one patient's or owner's history."""
    page: list[Any] = []
    total = start = 0
    full = False
    while True:
        rows = (await conn.execute(query.limit(_HISTORY_CHUNK).offset(start))).all()
        for row in rows:
            if await _admitted(conn, reach, row):
                if not full and offset <= total < offset + count:
                    size = len(row.body.encode()) if row.body is not None else 0
                    full = not budget.take_match(size, first=not page)
                    if not full:
                        page.append(row)
                total += 1
        if len(rows) < _HISTORY_CHUNK:
            return page, total
        start += _HISTORY_CHUNK


async def _current_inside(conn: AsyncConnection, reach: Reach, resource_id: str) -> bool:
    """Whether the current version of `reach.resource_type`/`resource_id` is inside `reach`,
    from the search index (a deletion is inside only a patient's own Patient record)."""
    clause = reach_clause(reach, resources)
    if clause is None:
        return True
    r = resources.c
    query = select(r.res_id).where(
        r.res_type == reach.resource_type, r.res_id == resource_id, clause
    )
    return (await conn.execute(query)).first() is not None


async def _admitted(conn: AsyncConnection, reach: Reach | None, row: Any) -> bool:
    """Whether the version in `row` (of `resources` or `resource_versions`) is inside `reach`;
    a deletion is judged by the last version before it."""
    if reach is None or reach.everything:
        return True
    body = row.body
    if body is None:
        body = await last_live_body(conn, row.res_type, row.res_id, row.version_id)
    return body is not None and reach.admits(orjson.loads(body))
