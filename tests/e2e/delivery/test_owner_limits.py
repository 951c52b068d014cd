"""Per-owner limits, tried as a hostile app would with real signed tokens: the 101st
Subscription of one token subject is refused with 422 naming the limit and nothing is stored,
while another subject, and an administrator, are unaffected; SubscriptionTopics likewise.
Owners are counted in SQL, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirstore.clock import SystemClock
from herald.runtime import Runtime
from tests.e2e.delivery.conftest import subscription
from tests.support.herald import running_herald, stored_counts
from tests.support.tokens import jwt_settings, live_bearer

ADMIN = live_bearer(sub="admin-1")
ALICE = live_bearer(sub="alice", scope="launch/patient patient/Subscription.cruds", patient="p1")
BOB = live_bearer(sub="bob", scope="launch/patient patient/Subscription.cruds", patient="p2")
CAROL = live_bearer(sub="carol", scope="system/SubscriptionTopic.cruds")
DAVE = live_bearer(sub="dave", scope="system/SubscriptionTopic.cruds")

Herald = tuple[Runtime, httpx.AsyncClient]


@pytest.fixture
async def herald(database_url: str, tmp_path: Path) -> AsyncIterator[Herald]:
    async with running_herald(
        database_url,
        clock=SystemClock(),
        **jwt_settings(tmp_path),
        scheduler=False,
        limit_topics_per_owner=3,
    ) as running:
        yield running


def _off() -> dict[str, Any]:
    """A Subscription written `off`: no handshake, yet it counts toward its owner's limit."""
    return {**subscription("https://hooks.example.org/h"), "status": "off"}


async def _refused(
    runtime: Runtime, client: httpx.AsyncClient, path: str, body: Any, headers: Any
) -> str:
    before = await stored_counts(runtime)
    answer = await client.post(path, json=body, headers=headers)
    assert answer.status_code == 422, answer.text
    assert await stored_counts(runtime) == before
    async with asyncio.timeout(5):
        assert (await client.get("/metadata")).status_code == 200
    return str(answer.json()["issue"][0]["diagnostics"])


async def _made(client: httpx.AsyncClient, path: str, body: Any, headers: Any) -> str:
    answer = await client.post(path, json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def test_the_101st_subscription_of_one_owner_is_refused(herald: Herald) -> None:
    runtime, client = herald
    made = [await _made(client, "/Subscription", _off(), ALICE) for _ in range(100)]
    said = await _refused(runtime, client, "/Subscription", _off(), ALICE)
    assert "at most 100" in said and "HERALD_LIMIT_SUBSCRIPTIONS_PER_OWNER" in said
    # Another owner, and an administrator, are unaffected.
    await _made(client, "/Subscription", _off(), BOB)
    await _made(client, "/Subscription", _off(), ADMIN)
    # The owner may still change what it has, and deleting one frees a place.
    changed = {**_off(), "id": made[0], "reason": "changed"}
    answer = await client.put(f"/Subscription/{made[0]}", json=changed, headers=ALICE)
    assert answer.status_code == 200, answer.text
    deleted = await client.delete(f"/Subscription/{made[1]}", headers=ALICE)
    assert deleted.is_success
    await _made(client, "/Subscription", _off(), ALICE)
    await _refused(runtime, client, "/Subscription", _off(), ALICE)


def _topic() -> dict[str, Any]:
    return {
        "resourceType": "SubscriptionTopic",
        "url": f"http://example.org/SubscriptionTopic/{uuid.uuid4().hex[:8]}",
        "status": "active",
        "resourceTrigger": [{"resource": "Observation", "supportedInteraction": ["create"]}],
    }


async def test_topics_are_limited_per_owner(herald: Herald) -> None:
    runtime, client = herald
    for _ in range(3):
        await _made(client, "/SubscriptionTopic", _topic(), CAROL)
    said = await _refused(runtime, client, "/SubscriptionTopic", _topic(), CAROL)
    assert "at most 3" in said and "HERALD_LIMIT_TOPICS_PER_OWNER" in said
    # In a transaction too, and nothing of the transaction is stored.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _topic(), "request": {"method": "POST", "url": "SubscriptionTopic"}}
        ],
    }
    before = await stored_counts(runtime)
    answer = await client.post("", json=bundle, headers=CAROL)
    assert answer.status_code == 422, answer.text
    assert await stored_counts(runtime) == before
    await _made(client, "/SubscriptionTopic", _topic(), DAVE)
    await _made(client, "/SubscriptionTopic", _topic(), ADMIN)
    # A topic records only who created it, not that token's scopes.
    mine = (await client.get("/SubscriptionTopic", params={"_count": "50"}, headers=CAROL)).json()
    assert "system/SubscriptionTopic.cruds" not in str(mine)


async def test_subscriptions_sent_all_at_once_stop_at_the_limit(herald: Herald) -> None:
    # Each is checked before any is committed: those admitted moments ago count too.
    _runtime, client = herald
    answers = await asyncio.gather(
        *(client.post("/Subscription", json=_off(), headers=ALICE) for _ in range(130))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * 100 + [422] * 30, codes
    found = await client.get("/Subscription", params={"_count": "200"}, headers=ALICE)
    assert len(found.json()["entry"]) == 100
