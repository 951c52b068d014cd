"""The subscription ledger: event numbers, delivery progress, leases and dead letters, in SQL.

Everything a crash must not forget lives here, so any process can pick up where another left:
- `record` gives each (subscription, change) an `eventNumber` once: a redelivered change gets
  the number it already had (subscriptions/numbering.py).
- `delivered_through` says how far delivery got; notifications after it are still owed.
- A lease says which process delivers a subscription right now, so two never send the same
  subscription's notifications side by side; an expired lease may be taken over.
- Events given up become dead letters until replayed (subscriptions/dead_letters.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, insert, or_, select, update

from fhirstore import Store
from subscriptions.dead_letters import DeadLetters
from subscriptions.focus import RecentVersions
from subscriptions.many_states import ManyStates
from subscriptions.numbering import NewEvent, RecordedEvent, event_of, number_events
from subscriptions.progress import SubscriptionProgress as SubscriptionProgress  # re-exported
from subscriptions.progress import chunks, lock_in_order, progress_of_row
from subscriptions.state_writes import StateWrites
from subscriptions.tables import dead_letters, subscription_events, subscription_state


class Ledger(DeadLetters, ManyStates):
    def __init__(self, store: Store) -> None:
        self._store = store
        self._engine = store.engine
        # Focus versions of the events this process numbered lately, for its dispatcher.
        self.recent = RecentVersions()
        self._state_writes = StateWrites(store)  # one-row writes, committed together

    # -- subscriptions ------------------------------------------------------------------------

    async def register(self, subscription_id: str, status: str) -> None:
        """Start (or restart, after a client changed it) tracking a subscription; it has not
        reached its endpoint since (`last_sent_at` None), so it owes a handshake."""
        await self.register_many({subscription_id: status})

    async def register_many(self, statuses: Mapping[str, str]) -> None:
        """`register` each subscription with its status, in one transaction (the rows taken in
        id order, as numbering takes them): the known restarted, the others inserted."""
        state = subscription_state.c
        ids = sorted(statuses)
        by_status: dict[str, list[str]] = {}
        for i in ids:
            by_status.setdefault(statuses[i], []).append(i)
        async with self._store.bookkeeping_transaction() as conn:
            for chunk in chunks(ids):
                await lock_in_order(conn, chunk)
            known: set[str] = set()
            for status, same in by_status.items():
                for chunk in chunks(same):
                    restarted = await conn.execute(
                        update(subscription_state)
                        .where(state.subscription_id.in_(chunk))
                        .values(
                            status=status,
                            error_since=None,
                            last_error=None,
                            last_failure=None,
                            last_sent_at=None,
                        )
                        .returning(state.subscription_id)
                    )
                    known.update(restarted.scalars())
            fresh = [i for i in ids if i not in known]
            if fresh:
                await conn.execute(
                    insert(subscription_state),
                    [
                        {
                            "subscription_id": i,
                            "status": statuses[i],
                            "events_since_start": 0,
                            "delivered_through": 0,
                        }
                        for i in fresh
                    ],
                )

    async def forget(self, subscription_id: str) -> None:
        """The Subscription was deleted: nothing is owed any more and its retained events go.
        The row stays (as `off`) with its count, so that a Subscription created again with the
        same id goes on numbering and never reuses an idempotency key."""
        state = subscription_state.c
        async with self._store.bookkeeping_transaction() as conn:
            await conn.execute(
                update(subscription_state)
                .where(state.subscription_id == subscription_id)
                .values(
                    status="off",
                    delivered_through=state.events_since_start,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            await conn.execute(
                delete(subscription_events).where(
                    subscription_events.c.subscription_id == subscription_id
                )
            )

    async def progress(self, subscription_id: str) -> SubscriptionProgress | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(subscription_state).where(
                        subscription_state.c.subscription_id == subscription_id
                    )
                )
            ).first()
        return progress_of_row(row) if row is not None else None

    async def owed(
        self, subscription_id: str, limit: int
    ) -> tuple[SubscriptionProgress | None, list[RecordedEvent]]:
        """The subscription's progress and its oldest undelivered events (up to `limit`, in
        order), read on one connection; the events only when it is not `off` and its count
        is ahead of its delivery."""
        state = subscription_state.c
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(subscription_state).where(state.subscription_id == subscription_id)
                )
            ).first()
            if row is None:
                return None, []
            progress = progress_of_row(row)
            if (
                limit <= 0
                or progress.status == "off"
                or progress.events_since_start <= progress.delivered_through
            ):
                return progress, []
            rows = (
                await conn.execute(_pending(subscription_id, progress.delivered_through, limit))
            ).all()
        return progress, [event_of(row) for row in rows]

    async def progress_of(self, subscription_ids: Sequence[str]) -> dict[str, SubscriptionProgress]:
        found: dict[str, SubscriptionProgress] = {}
        async with self._engine.connect() as conn:
            for chunk in chunks(subscription_ids):
                rows = await conn.execute(
                    select(subscription_state).where(
                        subscription_state.c.subscription_id.in_(chunk)
                    )
                )
                found.update((row.subscription_id, progress_of_row(row)) for row in rows)
        return found

    async def set_status(
        self,
        subscription_id: str,
        status: str,
        *,
        now: datetime,
        error: str | None = None,
        failure: str | None = None,
    ) -> bool:
        """Record a status, with the error and the kind of delivery failure it was (if it was
        one); a delivery outcome (`active` / `error`) never overrides `off`. False when nothing
        changed."""
        state = subscription_state.c
        values: dict[str, Any] = {"status": status, "last_error": error, "last_failure": failure}
        if status == "error":
            values["error_since"] = func.coalesce(state.error_since, now)
        else:
            values["error_since"] = None
        unless_off = [state.status != "off"] if status in ("active", "error") else []
        return await self._update(subscription_id, *unless_off, **values)

    # -- numbering ----------------------------------------------------------------------------

    async def record(self, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        """Number each event for its subscription (subscriptions/numbering.py), in one
        transaction for all."""
        async with self._store.bookkeeping_transaction() as conn:
            return await number_events(conn, events)

    async def pending(self, subscription_id: str, after: int, limit: int) -> list[RecordedEvent]:
        """The oldest events after eventNumber `after` (where delivery got to), in order."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_pending(subscription_id, after, limit))).all()
        return [event_of(row) for row in rows]

    async def events(
        self, subscription_id: str, since: int | None, until: int | None, limit: int
    ) -> list[RecordedEvent]:
        """Retained events in [since, until] for `$events`, oldest first."""
        conds = [subscription_events.c.subscription_id == subscription_id]
        if since is not None:
            conds.append(subscription_events.c.event_number >= since)
        if until is not None:
            conds.append(subscription_events.c.event_number <= until)
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(subscription_events)
                    .where(and_(*conds))
                    .order_by(subscription_events.c.event_number)
                    .limit(limit)
                )
            ).all()
        return [event_of(row) for row in rows]

    async def delivered(
        self, subscription_id: str, through: int, last: int, *, now: datetime, owner: str
    ) -> bool:
        """Record that the events after `through` up to `last` were accepted (and traffic
        now). False when delivery is no longer at `through`: a replay moved it, or the lease
        was lost."""
        state = subscription_state.c
        return await self._update(
            subscription_id,
            state.lease_owner == owner,
            state.delivered_through == through,
            delivered_through=last,
            last_sent_at=now,
        )

    async def sent(self, subscription_id: str, *, now: datetime) -> None:
        """Traffic without events (handshake, heartbeat): resets the heartbeat clock."""
        await self._update(subscription_id, last_sent_at=now)

    # -- leases -------------------------------------------------------------------------------

    async def claim(
        self, subscription_id: str, owner: str, *, now: datetime, lease: timedelta
    ) -> bool:
        """Take or renew the delivery lease; False while another live process holds it."""
        state = subscription_state.c
        free = or_(state.lease_owner.is_(None), state.lease_owner == owner, state.lease_until < now)
        return await self._update(subscription_id, free, lease_owner=owner, lease_until=now + lease)

    async def release(self, subscription_id: str, owner: str) -> None:
        await self._update(
            subscription_id,
            subscription_state.c.lease_owner == owner,
            lease_owner=None,
            lease_until=None,
        )

    async def _update(self, subscription_id: str, *conditions: Any, **values: Any) -> bool:
        """Change one subscription's row where `conditions` hold (in a transaction shared with
        the other rows' changes queued meanwhile, `state_writes.py`); False when they did not."""
        where = and_(subscription_state.c.subscription_id == subscription_id, *conditions)
        statement = update(subscription_state).where(where).values(**values)
        return await self._state_writes.run(subscription_id, statement)

    async def owing(
        self, owner: str, *, now: datetime, limit: int = 1000
    ) -> list[SubscriptionProgress]:
        """Subscriptions that owe a handshake or undelivered events and that no process is
        delivering (nobody holds the lease, or a crashed process's lease has expired)."""
        state = subscription_state.c
        free = or_(state.lease_owner.is_(None), state.lease_until < now)
        owes = or_(state.events_since_start > state.delivered_through, state.last_sent_at.is_(None))
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(subscription_state)
                    .where(and_(free, owes, state.status != "off"))
                    .order_by(state.lease_until.is_not(None), state.lease_until)
                    .limit(limit)
                )
            ).all()
        return [progress_of_row(row) for row in rows]

    async def prune(self, older_than: datetime) -> int:
        """Drop delivered events that occurred before `older_than`. Undelivered events stay,
        and so do dead-lettered ones until they are replayed."""
        events = subscription_events.c
        state = subscription_state.c
        letters = dead_letters.c
        delivered = (
            select(state.delivered_through)
            .where(state.subscription_id == events.subscription_id)
            .scalar_subquery()
        )
        awaiting_replay = (
            select(letters.id)
            .where(
                and_(
                    letters.subscription_id == events.subscription_id,
                    letters.replayed_at.is_(None),
                    events.event_number.between(letters.first_event, letters.last_event),
                )
            )
            .exists()
        )
        async with self._store.bookkeeping_transaction() as conn:
            result = await conn.execute(
                delete(subscription_events).where(
                    and_(
                        events.occurred_at < older_than,
                        events.event_number <= delivered,
                        ~awaiting_replay,
                    )
                )
            )
        return result.rowcount


def _pending(subscription_id: str, after: int, limit: int) -> Select[Any]:
    """The oldest `limit` events of a subscription after eventNumber `after`, in order."""
    events = subscription_events.c
    return (
        select(subscription_events)
        .where(and_(events.subscription_id == subscription_id, events.event_number > after))
        .order_by(events.event_number)
        .limit(limit)
    )
