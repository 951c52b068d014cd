"""Delivery tests run Herald in its two shapes, with a real HTTP receiver on 127.0.0.1:
embedded (SQLite, in-process bus) and scaled out (PostgreSQL, a real Kafka broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirstore.wire import (
    FILTER_CRITERIA,
    HEARTBEAT_PERIOD,
    MAX_COUNT,
    PAYLOAD_CONTENT,
    RESOURCE_CHANGE,
    TIMEOUT,
)
from tests.support.databases import SHAPES
from tests.support.herald import HeraldFactory, shape_factory
from tests.support.waiting import eventually

# Fast retries and sweeps, so that recovery shows within a test's patience.
QUICK_DELIVERY = {
    "delivery_initial_backoff_seconds": 0.05,
    "delivery_max_backoff_seconds": 0.3,
    "dispatcher_sweep_seconds": 0.1,
    "delivery_lease_seconds": 5.0,
}


@pytest.fixture(params=SHAPES)
def shape(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start_herald(shape: str, request: pytest.FixtureRequest, tmp_path: Path) -> HeraldFactory:
    """`async with start_herald(**settings) as (runtime, client)` in the test's shape."""
    return shape_factory(request, shape, tmp_path, **QUICK_DELIVERY)


def subscription(
    endpoint: str,
    *,
    topic: str = RESOURCE_CHANGE,
    filters: tuple[str, ...] = (),
    content: str = "id-only",
    heartbeat: int | None = None,
    timeout: int | None = None,
    max_count: int | None = None,
    headers: tuple[str, ...] = (),
    end: str | None = None,
) -> dict[str, Any]:
    """A Backport IG Subscription on `topic` delivered by REST hook to `endpoint`."""
    channel_extensions = []
    if heartbeat is not None:
        channel_extensions.append({"url": HEARTBEAT_PERIOD, "valueUnsignedInt": heartbeat})
    if timeout is not None:
        channel_extensions.append({"url": TIMEOUT, "valueUnsignedInt": timeout})
    if max_count is not None:
        channel_extensions.append({"url": MAX_COUNT, "valuePositiveInt": max_count})
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]},
    }
    if channel_extensions:
        channel["extension"] = channel_extensions
    if headers:
        channel["header"] = list(headers)
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": topic,
        "channel": channel,
    }
    if filters:
        resource["_criteria"] = {
            "extension": [{"url": FILTER_CRITERIA, "valueString": f} for f in filters]
        }
    if end is not None:
        resource["end"] = end
    return resource


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """The SubscriptionStatus at the head of a notification Bundle."""
    head = bundle["entry"][0]["resource"]
    assert head["resourceType"] == "SubscriptionStatus"
    return head


def event_numbers(bundle: dict[str, Any]) -> list[int]:
    return [int(e["eventNumber"]) for e in status_of(bundle).get("notificationEvent", [])]


def notification_type(bundle: dict[str, Any]) -> str:
    return str(status_of(bundle)["type"])


async def subscribe(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    """POST a Subscription, wait until the handshake made it active; its id."""
    made = await client.post("/Subscription", json=resource)
    assert made.status_code == 201, made.text
    subscription_id = str(made.json()["id"])
    await wait_for_status(client, subscription_id, "active")
    return subscription_id


async def subscription_status(client: httpx.AsyncClient, subscription_id: str) -> str:
    return str((await client.get(f"/Subscription/{subscription_id}")).json()["status"])


async def wait_for_status(
    client: httpx.AsyncClient, subscription_id: str, wanted: str, within: float = 15.0
) -> None:
    """Poll the Subscription resource (as a client would) until its status is `wanted`."""
    seen: list[str] = []

    async def reached() -> bool:
        seen.append(await subscription_status(client, subscription_id))
        return seen[-1] == wanted

    await eventually(
        reached,
        within=within,
        what=lambda: f"Subscription/{subscription_id} stayed {seen[-1]!r}, never {wanted!r}",
    )
