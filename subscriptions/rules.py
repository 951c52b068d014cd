"""Checks on what clients write: a Subscription or SubscriptionTopic Herald cannot serve is
refused with an OperationOutcome, and nothing is stored.

A client's new or changed Subscription starts over as `requested` (or stays `off`): Herald
sets it `active` once the handshake reached the endpoint, as the Backport IG describes.

The ValueSets of a Subscription's `:in` / `:not-in` filters must expand, read as its owner may
read them (422 naming the ValueSet otherwise), unless it is written `off`.

A SubscriptionTopic's fhirPathCriteria are tried on sample resources under the FHIRPath budget
before it is stored.

One owner (the token subject recorded on the resource, `fhirstore/access/ownership.py`) may
own at most so many Subscriptions and so many SubscriptionTopics (`OwnerLimit`): one more is
refused with 422 naming the limit. Administrators, and resources with no owner (written while
authentication is off, or by Herald itself), are not limited (docs/limits.md).

Where a channel sends may be checked too (`EndpointCheck`: the server's safe-endpoints policy,
given by the service shell): a refused endpoint is named in the OperationOutcome. A Subscription
written `off` is not checked, so a client can always turn off one whose endpoint went bad.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fhirstore import Admissions, ResourceRule, Store, over_limit
from fhirstore.access import owner_of
from subscriptions.criteria_trial import try_topic_criteria
from subscriptions.elements import invalid
from subscriptions.fhirpath_budget import DEFAULT_RUNNER, FhirPathError, FhirPathRunner
from subscriptions.model import Channel
from subscriptions.registry import SubscriptionRegistry
from subscriptions.topics import parse_topic

# What is wrong with where a channel sends (e.g. a private address), or None.
EndpointCheck = Callable[[Channel], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class OwnerLimit:
    """At most `most` resources of `resource_type` per owner (setting HERALD_`setting`)."""

    store: Store
    resource_type: str
    most: int
    setting: str
    admissions: Admissions = field(default_factory=Admissions)

    async def check(self, resource: dict[str, Any]) -> None:
        """Refuse (422) `resource` when its owner already owns `most` others (those this
        process admitted moments ago included)."""
        owner = owner_of(resource)
        if owner is None or owner.admin:
            return
        found = resource.get("id")
        resource_id = found if isinstance(found, str) else None
        async with self.admissions.deciding(owner.subject) as decision:
            # First what of the recent ones is stored, then what is owned: one committed in
            # between is in both, and counted once.
            stored = await self.store.stored_ids(self.resource_type, list(decision.recent))
            owned = await self.store.owned_ids(
                self.resource_type, owner.subject, excluding=resource_id, most=self.most
            )
            owned.update(decision.pending(stored))
            owned.discard(resource_id or "")
            if len(owned) >= self.most:
                raise over_limit(
                    f"{owner.subject} already owns {self.most} {self.resource_type}s",
                    self.most,
                    self.setting,
                    "delete one it no longer needs, or update one instead of creating another",
                    self.resource_type,
                )
            decision.admit(resource_id)


def subscription_rule(
    registry: SubscriptionRegistry,
    endpoints: EndpointCheck | None = None,
    limit: OwnerLimit | None = None,
) -> ResourceRule:
    async def check(resource: dict[str, Any]) -> dict[str, Any]:
        if limit is not None:
            await limit.check(resource)
        criteria = resource.get("criteria")
        if isinstance(criteria, str) and registry.find_topic(criteria) is None:
            await registry.catch_up()  # a topic stored through another process moments ago
        if resource.get("status") == "off":  # always possible, even if its ValueSets went
            spec = registry.parse(resource)
        else:
            spec = await registry.accept(resource)
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


def owned_topic_rule(limit: OwnerLimit, fhirpath: FhirPathRunner = DEFAULT_RUNNER) -> ResourceRule:
    """`topic_rule`, after the owner's topics are counted."""
    topic = topic_rule(fhirpath)

    async def check(resource: dict[str, Any]) -> dict[str, Any]:
        await limit.check(resource)
        return await topic(resource)

    return check
