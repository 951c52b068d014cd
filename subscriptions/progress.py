"""A subscription's delivery progress as the ledger has it (`subscription_state`'s row), and
how statements over many such rows take them: a `CHUNK` of ids at a time, locked in id order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from subscriptions.tables import subscription_state

CHUNK = 1000  # ids per IN (...) list: far below any driver's bound-parameter limit


def chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    """`ids` a `CHUNK` at a time, for IN (...) lists."""
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start : start + CHUNK])


async def lock_in_order(conn: AsyncConnection, chunk: Sequence[str]) -> None:
    """Lock these subscriptions' rows in id order, the order every writer of several takes
    them in (PostgreSQL; SQLite's write transaction holds the whole database)."""
    if conn.dialect.name == "postgresql":
        state = subscription_state.c
        await conn.execute(
            select(state.subscription_id)
            .where(state.subscription_id.in_(chunk))
            .order_by(state.subscription_id)
            .with_for_update()
        )


@dataclass(frozen=True, slots=True)
class SubscriptionProgress:
    subscription_id: str
    status: str
    events_since_start: int
    delivered_through: int
    last_sent_at: datetime | None
    error_since: datetime | None
    last_error: str | None
    last_failure: str | None = None  # the kind of delivery failure `last_error` was

    @property
    def owed(self) -> int:
        """Events numbered and not yet delivered (numbers are gapless)."""
        return self.events_since_start - self.delivered_through


def progress_of_row(row: Any) -> SubscriptionProgress:
    return SubscriptionProgress(
        row.subscription_id,
        row.status,
        row.events_since_start,
        row.delivered_through,
        row.last_sent_at,
        row.error_since,
        row.last_error,
        row.last_failure,
    )
