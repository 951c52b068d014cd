"""The subscriptions' tables: each Subscription's state, its numbered events (the ledger,
subscriptions/ledger.py) and the notifications given up (dead letters).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from fhirstore.db import BigId, UtcDateTime, metadata

# One row per Subscription: where its event numbering and delivery stand, and who delivers it.
subscription_state = Table(
    "subscription_state",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    # requested | active | error | off (mirrored onto the Subscription resource's status)
    Column("status", String(16), nullable=False),
    # The last eventNumber handed out (SubscriptionStatus.eventsSinceSubscriptionStart).
    Column("events_since_start", BigInteger, nullable=False, default=0),
    # Every event up to this number was delivered or given up (dead-lettered).
    Column("delivered_through", BigInteger, nullable=False, default=0),
    # Last time anything (handshake, heartbeat, notification) reached the endpoint.
    Column("last_sent_at", UtcDateTime, nullable=True),
    Column("error_since", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    # What kind of failure `last_error` was (channels' `Failure`: blocked, unreachable, timeout,
    # rejected, unavailable); None when it was no delivery failure (or there is no error).
    Column("last_failure", String(16), nullable=True),
    # The process delivering this subscription, until when (a lease, renewed while it works).
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
)

# One row per (subscription, matched change): the numbered events `$events` returns.
subscription_events = Table(
    "subscription_events",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("event_number", BigInteger, primary_key=True),
    # The change event it came from: a redelivered change keeps its number.
    Column("event_id", String(36), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("interaction", String(8), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Index("ux_subscription_events_event", "subscription_id", "event_id", unique=True),
    Index("ix_subscription_events_occurred", "occurred_at"),
)

# Notifications given up after the give-up age, kept with the reason until replayed.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False),
    Column("first_event", BigInteger, nullable=False),
    Column("last_event", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("replayed_at", UtcDateTime, nullable=True),
    Index("ix_dead_letters_subscription", "subscription_id"),
    sqlite_autoincrement=True,
)
