"""Event numbering: each (subscription, change) gets its `eventNumber` once.

A redelivered change keeps the number it already had; new changes of a subscription are
numbered in order from its count (`events_since_start`, SubscriptionStatus
.eventsSinceSubscriptionStart). `number_events` runs inside the ledger's transaction
(subscriptions/ledger.py), which is what makes a number, once handed out, the one a retry gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from subscriptions.progress import chunks, lock_in_order
from subscriptions.tables import subscription_events, subscription_state


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A change to number for one subscription."""

    subscription_id: str
    event_id: str
    res_type: str
    res_id: str
    version_id: int
    interaction: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class RecordedEvent(NewEvent):
    """A change with the eventNumber it has for its subscription."""

    event_number: int


def event_of(row: Any) -> RecordedEvent:
    return RecordedEvent(
        row.subscription_id,
        row.event_id,
        row.res_type,
        row.res_id,
        row.version_id,
        row.interaction,
        row.occurred_at,
        row.event_number,
    )


async def number_events(conn: AsyncConnection, events: Sequence[NewEvent]) -> list[RecordedEvent]:
    """Number each event for its subscription, in order, inside the caller's transaction; a
    known (subscription, change) keeps the number it has. The subscriptions' rows are taken in
    id order so that two matchers numbering for the same subscriptions cannot deadlock.

    A few statements per batch, not per event or subscription: one lookup of the changes
    already numbered, the counters' lock and update, one insert of all new events."""
    by_subscription: dict[str, list[NewEvent]] = {}
    for new in events:
        by_subscription.setdefault(new.subscription_id, []).append(new)
    recorded: dict[tuple[str, str], RecordedEvent] = {}
    recorded.update(await _known(conn, by_subscription))
    fresh = {i: _unrecorded(news, recorded) for i, news in sorted(by_subscription.items())}
    counts = await _count(conn, {i: len(news) for i, news in fresh.items() if news})
    rows: list[dict[str, Any]] = []
    for subscription_id, news in fresh.items():
        last = counts.get(subscription_id, 0)
        for number, new in enumerate(news, start=last - len(news) + 1):
            row = {**_fields(new), "event_number": number}
            rows.append(row)
            recorded[new.subscription_id, new.event_id] = RecordedEvent(**row)
    if rows:
        await conn.execute(insert(subscription_events), rows)
    return [recorded[e.subscription_id, e.event_id] for e in events]


async def _known(
    conn: AsyncConnection, by_subscription: dict[str, list[NewEvent]]
) -> dict[tuple[str, str], RecordedEvent]:
    """The events among these that their subscriptions have numbered already (usually one
    query: these subscriptions' rows for these changes)."""
    events = subscription_events.c
    wanted = {
        (new.subscription_id, new.event_id) for news in by_subscription.values() for new in news
    }
    subscription_ids = sorted(by_subscription)
    event_ids = sorted({event_id for _, event_id in wanted})
    known: dict[tuple[str, str], RecordedEvent] = {}
    for subs in chunks(subscription_ids):
        for ids in chunks(event_ids):
            rows = await conn.execute(
                select(subscription_events).where(
                    and_(events.subscription_id.in_(subs), events.event_id.in_(ids))
                )
            )
            known.update(
                ((row.subscription_id, row.event_id), event_of(row))
                for row in rows
                if (row.subscription_id, row.event_id) in wanted
            )
    return known


def _unrecorded(
    news: list[NewEvent], recorded: dict[tuple[str, str], RecordedEvent]
) -> list[NewEvent]:
    """`news` without those numbered already, each change once, in order."""
    seen: set[str] = set()
    fresh = []
    for new in news:
        if (new.subscription_id, new.event_id) not in recorded and new.event_id not in seen:
            seen.add(new.event_id)
            fresh.append(new)
    return fresh


async def _count(conn: AsyncConnection, added: dict[str, int]) -> dict[str, int]:
    """Add to each subscription's count the events it gets; the new counts. The rows are
    locked in id order first (PostgreSQL; SQLite's transaction holds the whole database), then
    counted up in one statement per number of events added (a wave adds one to each)."""
    state = subscription_state.c
    ids = sorted(added)
    for chunk in chunks(ids):
        await lock_in_order(conn, chunk)
    by_amount: dict[int, list[str]] = {}
    for subscription_id in ids:
        by_amount.setdefault(added[subscription_id], []).append(subscription_id)
    counts: dict[str, int] = {}
    for amount, same in by_amount.items():
        for chunk in chunks(same):
            rows = await conn.execute(
                update(subscription_state)
                .where(state.subscription_id.in_(chunk))
                .values(events_since_start=state.events_since_start + amount)
                .returning(state.subscription_id, state.events_since_start)
            )
            counts.update((row.subscription_id, int(row.events_since_start)) for row in rows)
    unknown = [i for i in ids if i not in counts]
    if unknown:  # matched before their registration landed: start counting now
        await conn.execute(
            insert(subscription_state),
            [
                {
                    "subscription_id": i,
                    "status": "requested",
                    "events_since_start": added[i],
                    "delivered_through": 0,
                }
                for i in unknown
            ],
        )
        counts.update((i, added[i]) for i in unknown)
    return counts


def _fields(new: NewEvent) -> dict[str, Any]:
    return {
        "subscription_id": new.subscription_id,
        "event_id": new.event_id,
        "res_type": new.res_type,
        "res_id": new.res_id,
        "version_id": new.version_id,
        "interaction": new.interaction,
        "occurred_at": new.occurred_at,
    }
