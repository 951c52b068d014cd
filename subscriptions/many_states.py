"""Many subscriptions' leases and progress at once: the part of the `Ledger`
(subscriptions/ledger.py) a delivery round (channels/rounds.py) uses, one statement per
chunk of subscriptions where the one-subscription methods take one each.

Each write keeps the conditions of its one-subscription counterpart (`claim`, `sent`,
`set_status`, `delivered`, `release`) row by row and says which rows it changed. On PostgreSQL
the rows are locked in subscription id order first, the order every other writer of
`subscription_state` takes them in, so that two transactions cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from fhirstore import Store
from subscriptions.numbering import RecordedEvent, event_of
from subscriptions.progress import SubscriptionProgress, chunks, lock_in_order, progress_of_row
from subscriptions.tables import subscription_events, subscription_state

# What a round read of one subscription: its progress, and its owed events when it owes no
# more than the round asked for.
Owed = tuple[SubscriptionProgress, list[RecordedEvent]]


class ManyStates:
    """Batched lease and progress reads and writes (a part of `Ledger`)."""

    _store: Store
    _engine: AsyncEngine

    async def claim_many(
        self, subscription_ids: Sequence[str], owner: str, *, now: datetime, lease: timedelta
    ) -> set[str]:
        """Take or renew the delivery lease of each subscription no other live process holds
        (as `claim`); the ids taken."""
        state = subscription_state.c
        free = or_(state.lease_owner.is_(None), state.lease_owner == owner, state.lease_until < now)
        return await self._update_many(
            subscription_ids, free, lease_owner=owner, lease_until=now + lease
        )

    async def release_many(self, subscription_ids: Sequence[str], owner: str) -> None:
        state = subscription_state.c
        await self._update_many(
            subscription_ids, state.lease_owner == owner, lease_owner=None, lease_until=None
        )

    async def sent_many(
        self, subscription_ids: Sequence[str], *, now: datetime, owner: str
    ) -> set[str]:
        """Traffic without events (a handshake) at `now` to each subscription whose lease
        `owner` holds (as `sent`); the ids recorded."""
        state = subscription_state.c
        return await self._update_many(
            subscription_ids, state.lease_owner == owner, last_sent_at=now
        )

    async def activate_many(self, subscription_ids: Sequence[str]) -> set[str]:
        """`active`, without error, for each subscription not `off` (as `set_status`); the ids
        changed."""
        return await self._update_many(
            subscription_ids,
            subscription_state.c.status != "off",
            status="active",
            last_error=None,
            last_failure=None,
            error_since=None,
        )

    async def delivered_many(
        self, through: Mapping[str, tuple[int, int]], *, now: datetime, owner: str
    ) -> set[str]:
        """For each subscription id, (`through`, `last`): record the events after `through` up
        to `last` as accepted (as `delivered`); the ids recorded. One left out was rewound by a
        replay, or its lease was lost."""
        state = subscription_state.c
        recorded: set[str] = set()
        for chunk in chunks(sorted(through)):
            was = case({i: through[i][0] for i in chunk}, value=state.subscription_id)
            last = case({i: through[i][1] for i in chunk}, value=state.subscription_id)
            recorded |= await self._update_many(
                chunk,
                state.lease_owner == owner,
                state.delivered_through == was,
                delivered_through=last,
                last_sent_at=now,
            )
        return recorded

    async def owed_many(self, subscription_ids: Sequence[str], limit: int) -> dict[str, Owed]:
        """Each subscription's progress with its undelivered events, in order, when it owes
        between one and `limit` of them (else none), read on one connection."""
        state = subscription_state.c
        events = subscription_events.c
        found: dict[str, Owed] = {}
        async with self._engine.connect() as conn:
            for chunk in chunks(subscription_ids):
                rows = await conn.execute(
                    select(subscription_state).where(state.subscription_id.in_(chunk))
                )
                read = [progress_of_row(row) for row in rows]
                found.update((progress.subscription_id, (progress, [])) for progress in read)
                owing = [
                    p.subscription_id for p in read if p.status != "off" and 0 < p.owed <= limit
                ]
                if not owing:
                    continue
                query = (
                    select(subscription_events)
                    .join(
                        subscription_state,
                        and_(
                            state.subscription_id == events.subscription_id,
                            events.event_number > state.delivered_through,
                        ),
                    )
                    .where(events.subscription_id.in_(owing))
                    .order_by(events.subscription_id, events.event_number)
                )
                for row in await conn.execute(query):
                    found[row.subscription_id][1].append(event_of(row))
        return found

    async def _update_many(
        self, subscription_ids: Sequence[str], *conditions: Any, **values: Any
    ) -> set[str]:
        """Change the rows of `subscription_ids` where `conditions` hold, in one transaction;
        the ids changed."""
        state = subscription_state.c
        changed: set[str] = set()
        async with self._store.bookkeeping_transaction() as conn:
            for chunk in chunks(sorted(subscription_ids)):
                await lock_in_order(conn, chunk)
                rows = await conn.execute(
                    update(subscription_state)
                    .where(and_(state.subscription_id.in_(chunk), *conditions))
                    .values(**values)
                    .returning(state.subscription_id)
                )
                changed.update(row.subscription_id for row in rows)
        return changed
