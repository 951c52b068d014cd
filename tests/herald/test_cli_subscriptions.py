"""`herald subscriptions unloaded` as an operator uses it after an upgrade: the stored
Subscriptions this version cannot load, with the reason, before or after `herald serve` ran."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from fhirstore.wire import TASK_READY
from herald.cli import app
from tests.e2e.delivery.conftest import subscription
from tests.support.stored import store_as_an_old_version, store_topic_as_an_old_version

runner = CliRunner()


def test_stored_subscriptions_this_version_cannot_load_are_listed_with_the_reason(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    fine = subscription(
        "http://127.0.0.1:9/hook", topic=TASK_READY, filters=("owner=Practitioner/1",)
    )
    old = subscription(
        "http://127.0.0.1:9/hook", topic=TASK_READY, filters=("Task?owner:missing=false",)
    )
    asyncio.run(store_as_an_old_version(url, "fine-one", fine))
    # No `herald serve` of this version has run: its built-in topics are judged all the same.
    asyncio.run(store_as_an_old_version(url, "old-one", old))
    listed = runner.invoke(app, ["subscriptions", "unloaded", "--database-url", url])
    assert listed.exit_code == 0, listed.output
    assert "Subscription/old-one (error, owner no owner, topic " + TASK_READY in listed.output
    assert "filter" in listed.output and "parameters owner:missing" in listed.output
    assert "only with the modifiers =" in listed.output
    assert "fine-one" not in listed.output


def test_a_stored_topic_that_no_longer_parses_is_listed_and_so_are_its_subscribers(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    canonical = "http://example.org/SubscriptionTopic/lab"
    topic = {
        "resourceType": "SubscriptionTopic",
        "url": canonical,
        "status": "active",
        "resourceTrigger": [{"resource": "NoSuchType", "supportedInteraction": ["create"]}],
    }
    asyncio.run(store_topic_as_an_old_version(url, "lab", topic))
    asyncio.run(store_as_an_old_version(url, "on-lab", subscription("http://x/h", topic=canonical)))
    listed = runner.invoke(app, ["subscriptions", "unloaded", "--database-url", url])
    assert listed.exit_code == 0, listed.output
    assert f"SubscriptionTopic/lab ({canonical}): cannot be loaded" in listed.output
    assert "Subscription/on-lab" in listed.output and ": topic" in listed.output
    assert f"its topic SubscriptionTopic/lab ({canonical}) cannot be loaded" in listed.output


def test_with_nothing_unloaded_it_says_so(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    assert runner.invoke(app, ["migrate", "--database-url", url]).exit_code == 0
    listed = runner.invoke(app, ["subscriptions", "unloaded", "--database-url", url])
    assert listed.exit_code == 0, listed.output
    assert "every stored Subscription and SubscriptionTopic loads" in listed.output
