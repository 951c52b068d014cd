"""`Subscription/{id}/$events` decides with the calling token, not only with who owns the
Subscription: a token of the same person (same `sub`) with narrower scopes or another patient
context gets each event it may not read as a number and a time only (no focus, no resource), at
every content level it asks for."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.delivery import test_owned_subscriptions as owned
from tests.e2e.delivery.conftest import subscription
from tests.e2e.delivery.test_owned_subscriptions import (
    ADMIN,
    ALICE,
    Herald,
    _observation,
    _subscribe,
)
from tests.support.tokens import live_bearer
from tests.support.waiting import eventually

herald = owned.herald  # the same Herald: Alice's and Bob's patients, a REST hook receiver


def _events(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return list(bundle["entry"][0]["resource"].get("notificationEvent", []))


async def _recorded(herald: Herald) -> tuple[str, set[str]]:
    """Alice's full-resource Subscription, once it recorded two of her Observations."""
    _, client, receiver = herald
    mine = await _subscribe(client, ALICE, subscription(receiver.url, content="full-resource"))
    made = set()
    for code in ("alice-pressure", "alice-glucose"):
        answer = await client.post("/Observation", json=_observation("p1", code), headers=ADMIN)
        made.add(f"Observation/{answer.json()['id']}")

    async def both() -> bool:
        answer = await client.get(f"/Subscription/{mine}/$events", headers=ALICE)
        focus = {e.get("focus", {}).get("reference", "") for e in _events(answer.json())}
        unversioned = {f.partition("/_history/")[0] for f in focus}
        return all(any(f.endswith(m) for f in unversioned) for m in made)

    await eventually(both, within=15, what=lambda: "Alice's Observations not recorded")
    return mine, made


@pytest.mark.parametrize(
    "scope",
    [
        # Same person, an app that may manage her Subscriptions but read no Observations.
        {"scope": "patient/Subscription.cruds", "patient": "p1"},
        # Same person, launched in another patient's context.
        {"scope": "patient/Subscription.cruds patient/Observation.rs", "patient": "p2"},
        # Same person, a token with no resource scopes at all.
        {"scope": "openid"},
    ],
)
@pytest.mark.parametrize("content", ["full-resource", "id-only"])
async def test_events_show_only_what_the_calling_token_may_read(
    herald: Herald, scope: dict[str, str], content: str
) -> None:
    _, client, _ = herald
    mine, made = await _recorded(herald)
    narrow = live_bearer(sub="alice", **scope)
    answer = await client.get(f"/Subscription/{mine}/$events?content={content}", headers=narrow)
    if scope["scope"] == "openid":  # no scope reads Subscriptions: refused like a read
        assert answer.status_code == 403
        assert "alice-" not in answer.text
        return
    assert answer.status_code == 200, answer.text
    assert "alice-pressure" not in answer.text and "alice-glucose" not in answer.text
    for made_id in made:
        assert made_id not in answer.text
    events = _events(answer.json())
    numbers = [int(e["eventNumber"]) for e in events]
    assert numbers == list(range(1, len(numbers) + 1))  # every event still counted, no gap
    assert all("focus" not in e or "/Subscription/" in e["focus"]["reference"] for e in events)
    entries = answer.json()["entry"][1:]
    assert all("Observation" not in e["fullUrl"] for e in entries)


async def test_the_owner_with_her_own_scopes_still_gets_full_resources(herald: Herald) -> None:
    _, client, _ = herald
    mine, _made = await _recorded(herald)
    answer = await client.get(f"/Subscription/{mine}/$events?content=full-resource", headers=ALICE)
    assert "alice-pressure" in answer.text and "alice-glucose" in answer.text
    wider = live_bearer(sub="alice", scope="user/Subscription.rs user/Observation.rs")
    answer = await client.get(f"/Subscription/{mine}/$events?content=full-resource", headers=wider)
    assert "alice-pressure" in answer.text


async def test_status_and_binding_tokens_decide_with_the_calling_tokens_scopes(
    herald: Herald,
) -> None:
    """The owner's `sub` alone opens nothing: a token of hers without a scope on
    Subscriptions is refused as a read or search of them would be."""
    _, client, receiver = herald
    mine = await _subscribe(client, ALICE, subscription(receiver.url))
    openid = live_bearer(sub="alice", scope="openid")
    for path in (
        "/Subscription/$status",
        f"/Subscription/{mine}/$status",
        f"/Subscription/{mine}/$get-ws-binding-token",
        f"/Subscription/$get-ws-binding-token?id={mine}",
    ):
        answer = await client.get(path, headers=openid)
        assert answer.status_code == 403, (path, answer.text)
        assert "Subscription." in answer.json()["issue"][0]["diagnostics"]
    assert (await client.get(f"/Subscription/{mine}/$status", headers=ALICE)).status_code == 200
