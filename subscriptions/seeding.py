"""Store the built-in SubscriptionTopics, so clients read and search them like their own, and
reserve them (their ids and Herald's canonical base) for administrators: every patient's
Subscriptions rely on them."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from fhirstore import Conflict, Gone, NotFound, PreconditionFailed, Store
from fhirstore.access import Reserved
from fhirstore.wire import TOPIC_BASE
from subscriptions.builtin_topics import BUILTIN_TOPICS

BUILTIN_TOPIC_RESERVATION = Reserved(
    ids=frozenset(topic["id"] for topic in BUILTIN_TOPICS),
    url_prefix=TOPIC_BASE,
    what="Herald's built-in SubscriptionTopics",
)


async def seed_builtin_topics(store: Store) -> None:
    """Write each built-in topic that is missing or differs (several processes may race: the
    loser's write is refused and the winner's content is the same)."""
    for topic in BUILTIN_TOPICS:
        if await _stored(store, topic["id"]) == topic:
            continue
        with contextlib.suppress(Conflict, PreconditionFailed):
            await store.update("SubscriptionTopic", topic["id"], topic, internal=True)


async def _stored(store: Store, topic_id: str) -> dict[str, Any] | None:
    try:
        version = await store.read("SubscriptionTopic", topic_id)
    except (NotFound, Gone):
        return None
    assert version.body is not None
    stored = orjson.loads(version.body)
    stored.pop("meta", None)
    return stored
