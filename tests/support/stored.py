"""Resources written into a Herald database the way an earlier Herald version left them:
straight through the store as an internal write (no client rules, so nothing this version
checks), with the bookkeeping that version kept. For tests of what a new version makes of
what an old one stored."""

from __future__ import annotations

from typing import Any

from fhirstore.clock import SystemClock
from fhirstore.db.engine import create_engine
from fhirstore.db.migrate import upgrade
from fhirstore.store import Store
from subscriptions.ledger import Ledger


async def store_topic_as_an_old_version(
    database_url: str, topic_id: str, resource: dict[str, Any]
) -> None:
    """Store the SubscriptionTopic `resource` as `topic_id`, unchecked."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        store = Store(engine, SystemClock())
        await store.update(
            "SubscriptionTopic", topic_id, {**resource, "id": topic_id}, internal=True
        )
    finally:
        await engine.dispose()


async def store_as_an_old_version(
    database_url: str, subscription_id: str, resource: dict[str, Any], *, status: str = "active"
) -> None:
    """Store the Subscription `resource` as `subscription_id` with `status`, and track it in the
    ledger as that version did: handshake done, `status` recorded."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        store = Store(engine, SystemClock())
        body = {**resource, "id": subscription_id, "status": status}
        await store.update("Subscription", subscription_id, body, internal=True)
        ledger = Ledger(store)
        now = store.clock.now()
        await ledger.register(subscription_id, "requested")
        await ledger.sent(subscription_id, now=now)
        await ledger.set_status(subscription_id, status, now=now)
    finally:
        await engine.dispose()
