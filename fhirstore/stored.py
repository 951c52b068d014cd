"""Stored versions, read on a connection the caller holds (often inside its transaction).

`StoredVersion` is what every read of the store hands back. The functions here read versions
and current heads by key, without access checks: they serve Herald itself (the store's own
reads, the scheduler, the subscription registry), which reads inside its own transactions and
never names the store's tables (each package owns its tables: fhirstore/db/schema.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore.db.schema import resource_versions, resources, search_index
from fhirstore.db.writer import Head, ids_by_type, load_heads

_VERSIONS_PER_QUERY = 300  # ids per IN list when their version numbers are bound too
_IDS_PER_QUERY = 900
_VALUES_PER_QUERY = 500


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version as stored. `body` is the JSON text (None for a delete)."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    method: str
    body: str | None

    @property
    def deleted(self) -> bool:
        return self.body is None


def version_of(row: Any) -> StoredVersion:
    """The `StoredVersion` of a `resource_versions` row."""
    return StoredVersion(
        row.res_type, row.res_id, row.version_id, row.last_updated, row.method, row.body
    )


async def current_in(
    conn: AsyncConnection, resource_type: str, ids: Sequence[str]
) -> dict[str, StoredVersion]:
    """The current version of each of `ids` that ever existed (deletions included)."""
    found: dict[str, StoredVersion] = {}
    r = resources.c
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), _IDS_PER_QUERY):
        chunk = wanted[start : start + _IDS_PER_QUERY]
        rows = await conn.execute(
            select(r.res_id, r.version_id, r.last_updated, r.body).where(
                and_(r.res_type == resource_type, r.res_id.in_(chunk))
            )
        )
        for row in rows:
            found[row.res_id] = StoredVersion(
                resource_type, row.res_id, row.version_id, row.last_updated, "", row.body
            )
    return found


async def heads_in(
    conn: AsyncConnection, resource_type: str, ids: Sequence[str]
) -> dict[str, Head]:
    """`current_in` without the bodies: what a caller needs to see whether anything changed."""
    heads = await load_heads(conn, [(resource_type, i) for i in set(ids)], lock=False)
    return {resource_id: head for (_, resource_id), head in heads.items()}


async def live_of_type(
    conn: AsyncConnection, resource_type: str, *, after: str = "", limit: int = 1_000
) -> list[StoredVersion]:
    """The current version of live resources of `resource_type`, `limit` at most, in id order
    from just after the id `after` (a handful of types only: Herald reads every
    SubscriptionTopic and Subscription at start, a page at a time)."""
    r = resources.c
    rows = await conn.execute(
        select(r.res_id, r.version_id, r.last_updated, r.body)
        .where(and_(r.res_type == resource_type, r.deleted.is_(False), r.res_id > after))
        .order_by(r.res_id)
        .limit(limit)
    )
    return [
        StoredVersion(resource_type, row.res_id, row.version_id, row.last_updated, "", row.body)
        for row in rows
    ]


async def first_stored(
    conn: AsyncConnection, resource_type: str, ids: Sequence[str]
) -> dict[str, datetime]:
    """When each of `ids` was first stored (its version 1's `lastUpdated`)."""
    v = resource_versions.c
    rows = await conn.execute(
        select(v.res_id, v.last_updated).where(
            and_(v.res_type == resource_type, v.version_id == 1, v.res_id.in_(list(ids)))
        )
    )
    return {row.res_id: row.last_updated for row in rows}


async def token_holders(
    conn: AsyncConnection, resource_type: str, param: str, system: str, codes: Sequence[str]
) -> list[tuple[str, str]]:
    """(id, code) of each current resource of `resource_type` whose token search parameter
    `param` holds `system|code`, for any of `codes` (from the search index)."""
    found: list[tuple[str, str]] = []
    s = search_index.c
    for start in range(0, len(codes), _VALUES_PER_QUERY):
        chunk = codes[start : start + _VALUES_PER_QUERY]
        rows = await conn.execute(
            select(s.res_id, s.code).where(
                and_(
                    s.res_type == resource_type,
                    s.param == param,
                    s.code.in_(chunk),
                    s.system == system,
                )
            )
        )
        found.extend((row.res_id, row.code) for row in rows)
    return found


async def versions_in(
    conn: AsyncConnection, keys: Sequence[tuple[str, str, int]]
) -> dict[tuple[str, str, int], StoredVersion]:
    """Many versions at once, by (type, id, versionId); those that do not exist are left
    out, deletions are included (`deleted`)."""
    found: dict[tuple[str, str, int], StoredVersion] = {}
    wanted = set(keys)
    numbers_of: dict[tuple[str, str], set[int]] = {}
    for resource_type, resource_id, number in wanted:
        numbers_of.setdefault((resource_type, resource_id), set()).add(number)
    v = resource_versions.c
    for resource_type, ids in ids_by_type(sorted(numbers_of)).items():
        for start in range(0, len(ids), _VERSIONS_PER_QUERY):
            chunk = ids[start : start + _VERSIONS_PER_QUERY]
            numbers = set().union(*(numbers_of[resource_type, i] for i in chunk))
            rows = await conn.execute(
                select(resource_versions).where(
                    v.res_type == resource_type,
                    v.res_id.in_(chunk),
                    v.version_id.in_(sorted(numbers)),
                )
            )
            for row in rows:  # ids x numbers may hold versions nobody asked for
                if (resource_type, row.res_id, row.version_id) in wanted:
                    found[resource_type, row.res_id, row.version_id] = version_of(row)
    return found
