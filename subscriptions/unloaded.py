"""A stored Subscription or SubscriptionTopic that Herald cannot load, and why.

A Subscription accepted once may fail to parse later: an upgrade narrowed a built-in topic's
`canFilterBy` (or its modifiers), a stored topic was changed or deleted, a setting it relies on
changed (SMTP turned off, a queue topic no longer allowed), or its topic itself no longer
parses. The registry never drops such a Subscription silently: it records an `Unloaded` here,
which says

- for its owner (`reason`, shown in `$status` and in `Subscription.error`): the parser's own
  message, which may quote the filter as the client wrote it;
- for logs and metrics (`kind`, `element`, `parameters`): what kind of cause, which element,
  and the names of the filter parameters there, never their values.

`spec` stands in for the Subscription where an operation needs one (`$status`, `$events`): its
id, topic, owner and, when its channel still parses, its channel. Nothing here touches a
database.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fhirstore import FhirError
from fhirstore.access import owner_of
from subscriptions.channel import ChannelSupport, parse_channel
from subscriptions.model import Channel, SubscriptionSpec, SubscriptionState, classic_topic_url

# topic: its topic is unknown, deleted or cannot be loaded itself; filter: a filter (or classic
# criteria) the topic or the search no longer accepts; channel: the channel is not served with
# this server's settings; invalid: any other element.
UnloadedKind = Literal["topic", "filter", "channel", "invalid"]
KINDS: tuple[UnloadedKind, ...] = ("topic", "filter", "channel", "invalid")

# Every reason Herald writes for a Subscription it cannot load starts so: a Subscription that
# loads again while its stored error says so was put in error by this, not by a delivery.
REASON_PREFIX = "Herald cannot load this Subscription: "
LOADED_AGAIN = (
    "Herald loads this Subscription again (what kept it from loading was put right). Changes "
    "committed while it could not be loaded were not matched for it and will not be notified; "
    "it turns active with its next notification that reaches the endpoint."
)
_FILTER_AT = re.compile(r"^Subscription\.criteria\.extension\[(\d+)\]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_TYPE = re.compile(r"[A-Z][A-Za-z]+")


@dataclass(frozen=True, slots=True)
class UnloadedTopic:
    """A stored SubscriptionTopic that does not parse (its subscribers cannot load either)."""

    topic_id: str
    url: str | None
    element: str
    problem: str  # the parser's message: it may quote the topic's criteria


@dataclass(frozen=True, slots=True)
class Unloaded:
    """A stored Subscription that does not parse, with what can be said of it."""

    spec: SubscriptionSpec  # a stand-in: status `error` (or `off`), no filters
    kind: UnloadedKind
    element: str
    parameters: tuple[str, ...]  # filter parameter names (with modifier) at `element`
    problem: str

    @property
    def subscription_id(self) -> str:
        return self.spec.id

    @property
    def reason(self) -> str:
        """What its owner reads in `$status` and `Subscription.error`."""
        problem = self.problem.rstrip(". ")
        return (
            f"{REASON_PREFIX}{problem}. Changes are not matched for it while it cannot be "
            "loaded: update it (PUT) with what the topic and this server accept now, or "
            "delete it."
        )


class UnloadedWatcher(Protocol):
    """Told by a registry when a Subscription cannot be loaded, and when one that could not
    (in this registry, or in an earlier process: its stored error says so) loads now."""

    def unloaded(self, item: Unloaded) -> None: ...

    def loaded(self, spec: SubscriptionSpec) -> None: ...


def diagnose(
    resource_id: str,
    resource: dict[str, Any],
    error: FhirError,
    *,
    topic_known: Callable[[str], bool],
    topic_problem: Callable[[str], UnloadedTopic | None],
    channels: ChannelSupport,
) -> Unloaded:
    """What `error`, raised parsing the stored Subscription `resource`, means."""
    element = error.expression[0] if error.expression else "Subscription"
    criteria = resource.get("criteria")
    criteria = criteria.strip() if isinstance(criteria, str) else ""
    head = criteria.partition("?")[0]
    classic = bool(_TYPE.fullmatch(head))
    topic_url = classic_topic_url(head) if classic else criteria.partition("|")[0]
    problem = error.diagnostics
    kind: UnloadedKind
    if not classic and topic_url and not topic_known(topic_url):
        kind = "topic"
        broken = topic_problem(topic_url)
        if broken is not None:
            problem = (
                f"its topic SubscriptionTopic/{broken.topic_id} ({topic_url}) cannot be "
                f"loaded: {broken.problem}"
            )
    elif element.startswith("Subscription.channel"):
        kind = "channel"
    elif element.startswith("Subscription.criteria"):
        kind = "filter"
    else:
        kind = "invalid"
    stored = resource.get("status")
    status: SubscriptionState = "off" if stored == "off" else "error"
    spec = SubscriptionSpec(
        id=resource_id,
        topic_url=topic_url,
        filters=(),
        channel=_channel(resource, classic, channels),
        status=status,
        classic=classic,
        owner=_owner(resource),
    )
    return Unloaded(spec, kind, element, _parameters(resource, element, criteria), problem)


def _channel(resource: dict[str, Any], classic: bool, channels: ChannelSupport) -> Channel:
    try:
        return parse_channel(resource, classic=classic, support=channels)
    except FhirError:
        return Channel("rest-hook", "", content="empty")


def _owner(resource: dict[str, Any]) -> Any:
    try:
        return owner_of(resource)
    except (TypeError, ValueError, AttributeError):
        return None


def _parameters(resource: dict[str, Any], element: str, criteria: str) -> tuple[str, ...]:
    """The names (never the values) of the filter parameters at `element`."""
    text: object = None
    found = _FILTER_AT.match(element)
    if found is not None:
        holder = resource.get("_criteria")
        items = holder.get("extension") if isinstance(holder, dict) else None
        index = int(found.group(1))
        if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
            text = items[index].get("valueString")
    elif element == "Subscription.criteria" and "?" in criteria:
        text = criteria
    if not isinstance(text, str):
        return ()
    head = text.partition("=")[0]
    if "?" in head:
        text = text.partition("?")[2]
    elif "." in head and _TYPE.fullmatch(head.partition(".")[0]):
        text = text.partition(".")[2]
    names = (part.partition("=")[0] for part in text.split("&"))
    return tuple(name if _NAME.fullmatch(name) else "(unreadable name)" for name in names if name)
