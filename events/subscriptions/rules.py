"""Checks on what clients write: a Subscription or SubscriptionTopic Herald cannot serve is
refused with an OperationOutcome, and nothing is stored.

A client's new or changed Subscription starts over as `requested` (or stays `off`): Herald
sets it `active` once the handshake reached the endpoint, as the Backport IG describes.
"""

from __future__ import annotations

from typing import Any

from events.subscriptions.registry import SubscriptionRegistry
from events.subscriptions.topics import parse_topic
from fhirstore.store import ResourceRule


def subscription_rule(registry: SubscriptionRegistry) -> ResourceRule:
    async def check(resource: dict[str, Any]) -> dict[str, Any]:
        criteria = resource.get("criteria")
        if isinstance(criteria, str) and registry.find_topic(criteria) is None:
            await registry.catch_up()  # a topic stored through another process moments ago
        registry.parse(resource)
        checked = dict(resource)
        checked["status"] = "off" if resource.get("status") == "off" else "requested"
        checked.pop("error", None)
        return checked

    return check


async def topic_rule(resource: dict[str, Any]) -> dict[str, Any]:
    parse_topic(resource)
    return resource
