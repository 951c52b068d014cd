"""Who may write SubscriptionTopics, with real signed tokens. The built-in topics every
patient's Subscriptions rely on are changed by an administrator only; any other topic is
written by an administrator or a token with `system/SubscriptionTopic.c` (`.u`, `.d`) by name.
`user/*.cruds` writes no topic at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirstore.clock import FrozenClock
from fhirstore.wire import TASK_READY
from herald.runtime import Runtime
from subscriptions.builtin_topics import BUILTIN_TOPICS
from tests.subscriptions.test_topics import topic
from tests.support.herald import running_herald, stored_counts
from tests.support.tokens import NOW, bearer, jwt_settings, token

ADMIN = bearer(token(sub="admin-1"))
WARD = bearer(token(sub="ward-app", scope="user/*.cruds"))
TOPIC_WRITER = bearer(
    token(
        sub="integration",
        scope="system/SubscriptionTopic.c system/SubscriptionTopic.u system/SubscriptionTopic.d",
    )
)
Herald = tuple[Runtime, httpx.AsyncClient]


@pytest.fixture
async def herald(tmp_path: Path) -> AsyncIterator[Herald]:
    async with running_herald(
        f"sqlite+aiosqlite:///{tmp_path}/herald.db",
        clock=FrozenClock(NOW),
        **jwt_settings(tmp_path),
        scheduler=False,
    ) as running:
        yield running


def _mine(topic_id: str = "encounter-complete", **more: Any) -> dict[str, Any]:
    return {**topic(), "id": topic_id, **more}


async def _builtins(client: httpx.AsyncClient) -> list[tuple[str, str, str]]:
    """(id, versionId, status) of each stored built-in topic."""
    found = []
    for builtin in BUILTIN_TOPICS:
        answer = await client.get(f"/SubscriptionTopic/{builtin['id']}", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        stored = answer.json()
        found.append((stored["id"], stored["meta"]["versionId"], stored["status"]))
    return found


def _changed(builtin: dict[str, Any]) -> dict[str, Any]:
    return {**builtin, "description": "rewritten by a client", "status": "retired"}


@pytest.mark.parametrize("headers", [WARD, TOPIC_WRITER], ids=["user-star", "topic-scope"])
async def test_nobody_but_an_administrator_changes_the_built_in_topics(
    herald: Herald, headers: dict[str, str]
) -> None:
    runtime, client = herald
    builtins = await _builtins(client)
    assert {status for _, _, status in builtins} == {"active"}
    before = await stored_counts(runtime)
    task_ready = next(t for t in BUILTIN_TOPICS if t["url"] == TASK_READY)
    path = f"/SubscriptionTopic/{task_ready['id']}"
    tries = [
        await client.put(path, json=_changed(task_ready), headers=headers),
        await client.delete("/SubscriptionTopic/encounter-start", headers=headers),
        # The same canonical url under another id would shadow the built-in one.
        await client.post(
            "/SubscriptionTopic", json=_mine("shadow", url=TASK_READY), headers=headers
        ),
    ]
    for answer in tries:
        assert answer.status_code == 403, answer.text
        assert answer.json()["issue"][0]["code"] == "forbidden"
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "DELETE", "url": "SubscriptionTopic/task-ready"}},
            {
                "resource": _changed(task_ready),
                "request": {"method": "PUT", "url": "SubscriptionTopic/task-ready"},
            },
        ],
    }
    entries = (await client.post("", json=bundle, headers=headers)).json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["403", "403"]
    assert await stored_counts(runtime) == before
    assert await _builtins(client) == builtins
    # The administrator may.
    changed = await client.put(path, json=_changed(task_ready), headers=ADMIN)
    assert changed.status_code == 200, changed.text


async def test_a_user_star_token_creates_no_topic(herald: Herald) -> None:
    runtime, client = herald
    before = await stored_counts(runtime)
    answer = await client.post("/SubscriptionTopic", json=_mine(), headers=WARD)
    assert answer.status_code == 403
    assert "system/SubscriptionTopic.c" in answer.json()["issue"][0]["diagnostics"]
    put = await client.put("/SubscriptionTopic/mine", json=_mine("mine"), headers=WARD)
    assert put.status_code == 403
    assert await stored_counts(runtime) == before
    # It still reads them, as any other type.
    assert (await client.get("/SubscriptionTopic", headers=WARD)).status_code == 200


async def test_the_topic_scope_by_name_writes_its_own_topics(herald: Herald) -> None:
    _, client = herald
    made = await client.post("/SubscriptionTopic", json=_mine(), headers=TOPIC_WRITER)
    assert made.status_code == 201, made.text
    path = f"/SubscriptionTopic/{made.json()['id']}"
    changed = await client.put(
        path, json={**made.json(), "title": "Encounter completed"}, headers=TOPIC_WRITER
    )
    assert changed.status_code == 200, changed.text
    assert (await client.delete(path, headers=TOPIC_WRITER)).status_code == 204
    star = bearer(token(sub="integration", scope="system/*.cruds"))
    refused = await client.post("/SubscriptionTopic", json=_mine(), headers=star)
    assert refused.status_code == 403  # a wildcard does not name topics
