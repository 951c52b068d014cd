"""Stored Subscriptions Herald can no longer load (a topic narrowed by an upgrade or changed by
its author, a topic deleted) are never dropped silently: the Subscription shows `error` with
the reason, `$status` says so, the log says which one without its filter values, and an update
by its owner (or the topic put right) brings it back. Both shapes, a real REST hook receiver."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirstore.wire import TASK_READY
from subscriptions.unloaded import LOADED_AGAIN, REASON_PREFIX
from tests.e2e.delivery.conftest import (
    notification_type,
    status_of,
    subscribe,
    subscription,
    wait_for_status,
)
from tests.support.databases import sqlite_url
from tests.support.herald import HeraldFactory, running_herald
from tests.support.receiver import Receiver, http_receiver
from tests.support.stored import store_as_an_old_version
from tests.support.waiting import eventually

SECRET = "Qjxzvorrelbeck"  # a filter value nobody else would log
HERALD_PACKAGES = {"fhirstore", "events", "subscriptions", "channels", "scheduler", "herald"}


def _ready_task(owner: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "ready",
        "intent": "order",
        "owner": {"reference": owner},
    }


def _notified(receiver: Receiver, subscription_id: str) -> list[dict[str, Any]]:
    """The event notifications `subscription_id` received."""
    return [
        request.json
        for request in receiver.requests
        if request.json is not None
        and notification_type(request.json) == "event-notification"
        and status_of(request.json)["subscription"]["reference"].endswith(
            f"/Subscription/{subscription_id}"
        )
    ]


async def _error_of(client: httpx.AsyncClient, subscription_id: str) -> str:
    return str((await client.get(f"/Subscription/{subscription_id}")).json().get("error", ""))


async def _wait_for_error(
    client: httpx.AsyncClient, subscription_id: str, starting: str, within: float = 15.0
) -> str:
    seen: list[str] = []

    async def shown() -> bool:
        seen.append(await _error_of(client, subscription_id))
        return seen[-1].startswith(starting)

    await eventually(
        shown,
        within=within,
        what=lambda: f"Subscription/{subscription_id} error stayed {seen[-1]!r}",
    )
    return seen[-1]


async def _database_url(start_herald: HeraldFactory) -> str:
    """The database of `start_herald`, created (and its built-in topics stored) by one start."""
    async with start_herald() as (runtime, _):
        return runtime.settings.database_url


async def test_a_subscription_stored_with_a_filter_the_topic_no_longer_allows_shows_error(
    start_herald: HeraldFactory, caplog: pytest.LogCaptureFixture
) -> None:
    database_url = await _database_url(start_herald)
    old_id = f"old-{uuid.uuid4().hex[:8]}"
    async with http_receiver() as receiver:
        # Accepted by the version before this one, whose task-ready topic allowed `:missing`.
        old = subscription(receiver.url, topic=TASK_READY, filters=("Task?owner:missing=false",))
        await store_as_an_old_version(database_url, old_id, old)
        caplog.set_level(logging.DEBUG)
        async with start_herald() as (_, client):
            await wait_for_status(client, old_id, "error")
            reason = await _error_of(client, old_id)
            assert reason.startswith(REASON_PREFIX), reason
            assert "only with the modifiers =" in reason and "`:missing`" in reason, reason

            status = (await client.get(f"/Subscription/{old_id}/$status")).json()
            head = status["entry"][0]["resource"]
            assert head["status"] == "error"
            assert [e["text"] for e in head["error"]] == [reason]
            metrics = (await client.get(client.base_url.join("/metrics"))).text
            assert 'herald_subscriptions_unloaded{kind="filter"} 1.0' in metrics
            listed = (await client.get("/Subscription/$status")).json()
            shown = {e["resource"]["subscription"]["reference"] for e in listed["entry"]}
            assert any(ref.endswith(f"/Subscription/{old_id}") for ref in shown)

            # Events are not matched while it cannot be loaded: a ready Task that its filter
            # would let through reaches a sentinel on the same topic, never the stored one.
            sentinel = await subscribe(client, subscription(receiver.url, topic=TASK_READY))
            await _ready_task_notifies(client, receiver, sentinel)
            assert _notified(receiver, old_id) == []
            again = (await client.get(f"/Subscription/{old_id}/$status")).json()
            assert again["entry"][0]["resource"]["eventsSinceSubscriptionStart"] == "0"

            # Its owner's update: the same filter gets the usual 422; an allowed one is taken.
            stored = (await client.get(f"/Subscription/{old_id}")).json()
            refused = await client.put(f"/Subscription/{old_id}", json=stored)
            assert refused.status_code == 422, refused.text
            assert "only with the modifiers =" in refused.json()["issue"][0]["diagnostics"]
            fixed = subscription(
                receiver.url, topic=TASK_READY, filters=("Task?owner=Practitioner/p1",)
            )
            put = await client.put(f"/Subscription/{old_id}", json={**fixed, "id": old_id})
            assert put.status_code == 200, put.text
            await wait_for_status(client, old_id, "active")
            assert "error" not in (await client.get(f"/Subscription/{old_id}")).json()
            await _ready_task_notifies(client, receiver, old_id)

    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and old_id in r.getMessage()
    ]
    assert warnings, "no warning names the Subscription that cannot be loaded"
    assert getattr(warnings[0], "kind", None) == "filter"
    assert getattr(warnings[0], "parameters", None) == ("owner:missing",)
    assert any(
        "stored Subscriptions" in r.getMessage() and "cannot be loaded" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    ), "no start-up summary"


async def _ready_task_notifies(
    client: httpx.AsyncClient, receiver: Receiver, subscription_id: str
) -> None:
    """Create a ready Task owned by Practitioner/p1; wait until `subscription_id` hears of it."""
    made = await client.post("/Task", json=_ready_task("Practitioner/p1"))
    assert made.status_code == 201, made.text

    async def notified() -> bool:
        return bool(_notified(receiver, subscription_id))

    await eventually(
        notified, within=15, what=lambda: f"Subscription/{subscription_id} was never notified"
    )


async def test_the_log_names_a_subscription_that_cannot_be_loaded_never_its_filter_values(
    start_herald: HeraldFactory, caplog: pytest.LogCaptureFixture
) -> None:
    database_url = await _database_url(start_herald)
    old_id = f"old-{uuid.uuid4().hex[:8]}"
    old = subscription(
        "http://127.0.0.1:9/hook", topic=TASK_READY, filters=(f"Task?code:text={SECRET}",)
    )
    await store_as_an_old_version(database_url, old_id, old)
    caplog.set_level(logging.DEBUG)
    async with start_herald() as (_, client):
        await wait_for_status(client, old_id, "error")
    # Herald's own records: its logging shows library chatter (aiokafka's DEBUG lines quote
    # the messages it sends) from WARNING only (herald/logging.py).
    logged = "\n".join(
        f"{r.getMessage()} {r.__dict__} {r.exc_text or ''}"
        for r in caplog.records
        if r.name.partition(".")[0] in HERALD_PACKAGES or r.levelno >= logging.WARNING
    )
    assert SECRET not in logged and SECRET.lower() not in logged.lower()
    assert f"Subscription/{old_id} cannot be loaded" in logged
    assert "code:text" in logged  # the parameter name is fine: it says what to look at


async def test_a_stored_topic_changed_to_refuse_a_filter_puts_its_subscribers_in_error(
    start_herald: HeraldFactory,
) -> None:
    url = f"http://example.org/SubscriptionTopic/lab-{uuid.uuid4().hex[:8]}"
    topic: dict[str, Any] = {
        "resourceType": "SubscriptionTopic",
        "url": url,
        "status": "active",
        "resourceTrigger": [{"resource": "Observation", "supportedInteraction": ["create"]}],
        "canFilterBy": [{"filterParameter": "code"}],
    }
    async with http_receiver() as receiver, start_herald() as (_, client):
        made = await client.post("/SubscriptionTopic", json=topic)
        assert made.status_code == 201, made.text
        topic_id = made.json()["id"]
        sub_id = await subscribe(
            client,
            subscription(receiver.url, topic=url, filters=("code:not=http://loinc.org|1-1",)),
        )
        narrowed = {**topic, "id": topic_id}
        narrowed["canFilterBy"] = [{"filterParameter": "code", "modifier": ["="]}]
        assert (await client.put(f"/SubscriptionTopic/{topic_id}", json=narrowed)).is_success
        reason = await _wait_for_error(client, sub_id, REASON_PREFIX)
        assert "only with the modifiers =" in reason and "`:not`" in reason, reason
        assert (await client.get(f"/Subscription/{sub_id}")).json()["status"] == "error"

        # The topic put right: it loads again and says so, then a notification makes it active.
        restored = {**topic, "id": topic_id}
        assert (await client.put(f"/SubscriptionTopic/{topic_id}", json=restored)).is_success
        assert await _wait_for_error(client, sub_id, LOADED_AGAIN[:30]) == LOADED_AGAIN
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2-2"}]},
        }
        assert (await client.post("/Observation", json=observation)).status_code == 201
        await wait_for_status(client, sub_id, "active")
        assert _notified(receiver, sub_id)

        # The topic deleted: its subscriber says its topic is gone.
        assert (await client.delete(f"/SubscriptionTopic/{topic_id}")).is_success
        reason = await _wait_for_error(client, sub_id, REASON_PREFIX)
        assert "is not a SubscriptionTopic this server knows" in reason, reason


async def test_an_email_subscription_on_a_server_without_smtp_any_more_shows_error_until_it_is_back(
    tmp_path: Path,
) -> None:
    database_url = sqlite_url(tmp_path)
    mailed = subscription("", filters=("Observation?subject=Patient/p1",))
    mailed["channel"] = {"type": "email", "endpoint": "mailto:care@example.org"}
    # Stored while HERALD_SMTP_HOST was set; this start has no SMTP server configured.
    await store_as_an_old_version(database_url, "mailed", mailed)
    async with running_herald(database_url) as (_, client):
        await wait_for_status(client, "mailed", "error")
        reason = await _error_of(client, "mailed")
        assert reason.startswith(REASON_PREFIX) and "HERALD_SMTP_HOST" in reason, reason
        refused = await client.put("/Subscription/mailed", json={**mailed, "id": "mailed"})
        assert refused.status_code == 422, refused.text
        token = await client.get("/Subscription/mailed/$get-ws-binding-token")
        assert token.status_code == 422
        assert token.json()["issue"][0]["diagnostics"] == reason
    # The setting back: it loads again at the next start, and says what it missed.
    async with running_herald(database_url, smtp_host="127.0.0.1", smtp_port=9) as (_, client):
        assert await _wait_for_error(client, "mailed", LOADED_AGAIN[:30]) == LOADED_AGAIN
        assert (await client.get("/Subscription/mailed")).json()["status"] == "error"
