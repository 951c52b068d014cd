"""Dead letters: notifications given up after the give-up age, kept with the reason until a
replay rewinds delivery to them (`herald dead-letters`, `herald replay`).

`DeadLetters` is the part of the `Ledger` (subscriptions/ledger.py) that records, lists and
replays them; giving up and replaying each move the subscription's delivery in the same
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from fhirstore import Store
from subscriptions.tables import dead_letters, subscription_state


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    subscription_id: str
    first_event: int
    last_event: int
    reason: str
    recorded_at: datetime
    replayed_at: datetime | None


class DeadLetters:
    """Recording, listing and replaying dead letters (a part of `Ledger`)."""

    _store: Store
    _engine: AsyncEngine

    async def give_up(
        self,
        subscription_id: str,
        through: int,
        first: int,
        last: int,
        reason: str,
        *,
        now: datetime,
        owner: str,
    ) -> bool:
        """Record events first..last as a dead letter and move delivery (at `through`, just
        before them) past them; False when delivery was not at `through` any more."""
        async with self._store.bookkeeping_transaction() as conn:
            result = await conn.execute(
                update(subscription_state)
                .where(
                    and_(
                        subscription_state.c.subscription_id == subscription_id,
                        subscription_state.c.lease_owner == owner,
                        subscription_state.c.delivered_through == through,
                    )
                )
                .values(delivered_through=last)
            )
            if result.rowcount != 1:
                return False
            await conn.execute(
                insert(dead_letters).values(
                    subscription_id=subscription_id,
                    first_event=first,
                    last_event=last,
                    reason=reason,
                    recorded_at=now,
                )
            )
        return True

    async def dead_letters(self, subscription_id: str | None = None) -> list[DeadLetter]:
        query = select(dead_letters).order_by(dead_letters.c.id)
        if subscription_id is not None:
            query = query.where(dead_letters.c.subscription_id == subscription_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            DeadLetter(
                r.id,
                r.subscription_id,
                r.first_event,
                r.last_event,
                r.reason,
                r.recorded_at,
                r.replayed_at,
            )
            for r in rows
        ]

    async def replay(self, dead_letter_id: int, *, now: datetime) -> DeadLetter | None:
        """Deliver a dead letter's events again: delivery rewinds to its first event (later
        events go out again too, with their own idempotency keys). None if unknown/replayed."""
        async with self._store.bookkeeping_transaction() as conn:
            row = (
                await conn.execute(select(dead_letters).where(dead_letters.c.id == dead_letter_id))
            ).first()
            if row is None or row.replayed_at is not None:
                return None
            await conn.execute(
                update(dead_letters).where(dead_letters.c.id == row.id).values(replayed_at=now)
            )
            state = subscription_state.c
            await conn.execute(
                update(subscription_state)
                .where(
                    and_(
                        state.subscription_id == row.subscription_id,
                        state.delivered_through >= row.first_event,
                    )
                )
                .values(delivered_through=row.first_event - 1)
            )
        return DeadLetter(
            row.id,
            row.subscription_id,
            row.first_event,
            row.last_event,
            row.reason,
            row.recorded_at,
            now,
        )
