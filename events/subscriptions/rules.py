"""Checks on what clients write: a Subscription or SubscriptionTopic Herald cannot serve is
refused with an OperationOutcome, and nothing is stored.

A client's new or changed Subscription starts over as `requested` (or stays `off`): Herald
sets it `active` once the handshake reached the endpoint, as the Backport IG describes.

A SubscriptionTopic's fhirPathCriteria are tried on sample resources under the FHIRPath budget
before it is stored.

Where a channel sends may be checked too (`EndpointCheck`: the server's safe-endpoints policy,
given by the service shell): a refused endpoint is named in the OperationOutcome. A Subscription
written `off` is not checked, so a client can always turn off one whose endpoint went bad.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from events.subscriptions.criteria_trial import try_topic_criteria
from events.subscriptions.elements import invalid
from events.subscriptions.fhirpath_budget import DEFAULT_RUNNER, FhirPathError, FhirPathRunner
from events.subscriptions.model import Channel
from events.subscriptions.registry import SubscriptionRegistry
from events.subscriptions.topics import parse_topic
from fhirstore.store import ResourceRule

# What is wrong with where a channel sends (e.g. a private address), or None.
EndpointCheck = Callable[[Channel], Awaitable[str | None]]


def subscription_rule(
    registry: SubscriptionRegistry, endpoints: EndpointCheck | None = None
) -> ResourceRule:
    async def check(resource: dict[str, Any]) -> dict[str, Any]:
        criteria = resource.get("criteria")
        if isinstance(criteria, str) and registry.find_topic(criteria) is None:
            await registry.catch_up()  # a topic stored through another process moments ago
        spec = registry.parse(resource)
        checked = dict(resource)
        checked["status"] = "off" if resource.get("status") == "off" else "requested"
        checked.pop("error", None)
        if endpoints is not None and checked["status"] != "off":
            problem = await endpoints(spec.channel)
            if problem is not None:
                raise invalid("Subscription.channel.endpoint", problem)
        return checked

    return check


def topic_rule(fhirpath: FhirPathRunner = DEFAULT_RUNNER) -> ResourceRule:
    """A SubscriptionTopic must parse, and its fhirPathCriteria must pass the trial on sample
    resources under the budget (`criteria_trial.py`)."""

    async def check(resource: dict[str, Any]) -> dict[str, Any]:
        triggers = resource.get("resourceTrigger")
        for trigger in triggers if isinstance(triggers, list) else ():
            expression = trigger.get("fhirPathCriteria") if isinstance(trigger, dict) else None
            if isinstance(expression, str):
                # Compiled off the loop first; parse_topic finds it compiled (or names the
                # element of an expression that does not compile).
                with contextlib.suppress(FhirPathError):
                    await fhirpath.compile(expression)
        await try_topic_criteria(parse_topic(resource), fhirpath)
        return resource

    return check
