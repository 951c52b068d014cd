"""The store's outbox reader: committed change events in commit order, for the relay and the
subscription registry, and pruning what the relay has published.

Outbox rows become visible in sequence order (on PostgreSQL the insert is serialised by an
advisory lock held to commit, fhirstore/db/writer.py), so nothing committed later can have a
smaller `seq` than one a reader has seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore.db.schema import outbox


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One committed change: the resource version written and where it stands in the outbox."""

    seq: int
    event_id: str
    res_type: str
    res_id: str
    version_id: int
    previous_version_id: int | None
    interaction: str  # create | update | delete
    occurred_at: datetime
    body: str | None  # the resource's JSON text (None for a delete)


async def entries_after(conn: AsyncConnection, position: int, limit: int) -> list[OutboxEntry]:
    """Up to `limit` entries after sequence `position`, in sequence order."""
    rows = await conn.execute(
        select(outbox).where(outbox.c.seq > position).order_by(outbox.c.seq).limit(limit)
    )
    return [OutboxEntry(**row._mapping) for row in rows]


async def newest_sequence(conn: AsyncConnection) -> int | None:
    """The newest sequence number in the outbox (None when it is empty)."""
    value = (await conn.execute(select(func.max(outbox.c.seq)))).scalar()
    return None if value is None else int(value)


async def sequence_bounds(conn: AsyncConnection) -> tuple[int, int]:
    """The oldest and newest outbox sequence numbers visible now ((0, 0) when empty)."""
    row = (await conn.execute(select(func.min(outbox.c.seq), func.max(outbox.c.seq)))).one()
    return int(row[0] or 0), int(row[1] or 0)


async def entries_of_types(
    conn: AsyncConnection, resource_types: Sequence[str], *, after: int, through: int
) -> list[OutboxEntry]:
    """The entries of `resource_types` with a sequence in (after, through], in order."""
    rows = await conn.execute(
        select(outbox)
        .where(
            and_(
                outbox.c.seq > after,
                outbox.c.seq <= through,
                outbox.c.res_type.in_(list(resource_types)),
            )
        )
        .order_by(outbox.c.seq)
    )
    return [OutboxEntry(**row._mapping) for row in rows]


async def prune(conn: AsyncConnection, *, through: int, before: datetime) -> None:
    """Drop the entries up to sequence `through` that occurred before `before`."""
    await conn.execute(
        delete(outbox).where(outbox.c.seq <= through).where(outbox.c.occurred_at < before)
    )
