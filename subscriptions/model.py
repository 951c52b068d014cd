"""The subscription domain as plain values: topics, triggers, filters, channels, subscriptions.

Parsers (`topics.py`, `subscription.py`) build these from FHIR resources; the matcher, the
notification builder and the dispatchers only ever see these values, never raw JSON.
Names follow the R4B SubscriptionTopic / Subscription resources and the R5 Backport IG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from fhirstore.access import Principal
from fhirstore.search import Criterion
from fhirstore.wire import CLASSIC_TOPIC_PREFIX
from subscriptions.payload import FhirVersion, MailBody

# A resource trigger on this type matches every resource type.
ANY_RESOURCE = "Resource"

Interaction = Literal["create", "update", "delete"]
ContentLevel = Literal["empty", "id-only", "full-resource"]
# Herald's channel types: the R4B codes it delivers, and its Kafka queue ("message" with the
# backport-channel-type extension set to HERALD_CHANNEL_TYPES|kafka).
ChannelType = Literal["rest-hook", "websocket", "email", "kafka"]
SubscriptionState = Literal["requested", "active", "error", "off"]
NotificationType = Literal[
    "handshake", "heartbeat", "event-notification", "query-status", "query-event"
]
ResultWhen = Literal["test-passes", "test-fails"]


@dataclass(frozen=True, slots=True)
class QueryCriteria:
    """SubscriptionTopic.resourceTrigger.queryCriteria: tests on the previous and new version.

    `previous` / `current` are ANDed criteria on the focus type; None means no test on that
    side. `result_for_create` / `result_for_delete` say what the missing side evaluates to.
    """

    previous: tuple[Criterion, ...] | None = None
    current: tuple[Criterion, ...] | None = None
    result_for_create: ResultWhen | None = None
    result_for_delete: ResultWhen | None = None
    require_both: bool = False


@dataclass(frozen=True, slots=True)
class ResourceTrigger:
    """SubscriptionTopic.resourceTrigger: which changes of which type the topic is about."""

    resource_type: str  # ANY_RESOURCE for every type
    interactions: frozenset[Interaction] = frozenset({"create", "update", "delete"})
    query: QueryCriteria | None = None
    fhirpath: str | None = None  # may use %previous and %current


@dataclass(frozen=True, slots=True)
class Topic:
    """SubscriptionTopic: `can_filter_by` maps a resource type (or ANY_RESOURCE) to the
    filter parameters a subscription may use; ANY_RESOURCE -> {"*"} allows every search
    parameter of the focus type.

    `filter_modifiers` maps a resource type (or ANY_RESOURCE) and a parameter (or "*") named by
    a canFilterBy entry to the R4B operator codes its `modifier` lists (`operators.py`); None,
    or a parameter not in it, allows every modifier and prefix."""

    url: str
    triggers: tuple[ResourceTrigger, ...]
    can_filter_by: dict[str, frozenset[str]] = field(default_factory=dict)
    filter_modifiers: dict[str, dict[str, frozenset[str] | None]] = field(default_factory=dict)
    title: str | None = None
    resource_id: str | None = None  # the SubscriptionTopic resource's id, when stored


@dataclass(frozen=True, slots=True)
class Filter:
    """One backport-filter-criteria entry (or one parameter of a classic criteria string)."""

    resource_type: str  # the type the criterion applies to
    criterion: Criterion
    text: str  # as the client wrote it, for $status and error messages
    path: str = ""  # the element it was written in, for error messages


@dataclass(frozen=True, slots=True)
class Channel:
    type: ChannelType
    endpoint: str
    # MIME type of the payload; None for a classic R4 subscription without payload.
    payload: str | None = "application/fhir+json"
    content: ContentLevel = "id-only"
    # The FHIR version of the notifications (`fhirVersion` on the payload): "4.0" gives the
    # Backport IG's R4 form, "4.3" (R4B) the SubscriptionStatus form.
    fhir_version: FhirVersion = "4.3"
    # Email only: the mail body's type, and whether the notification Bundle is attached.
    mail_body: MailBody | None = None
    attach: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    heartbeat_period: int | None = None  # seconds
    timeout: int | None = None  # seconds
    max_count: int = 1


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A Subscription as the matcher and dispatchers see it.

    `classic` is a plain R4 criteria subscription: `topic_url` is then the implicit topic
    `classic_topic_url(criteria type)` and `filters` come from its criteria string.
    """

    id: str
    topic_url: str
    filters: tuple[Filter, ...]
    channel: Channel
    status: SubscriptionState = "requested"
    end: datetime | None = None
    classic: bool = False
    secret: str | None = None
    # Who created it, with the scopes granted then (None: created while authentication was off,
    # or by Herald): its notifications carry only what the owner may read.
    owner: Principal | None = None
    # Why the matcher cannot evaluate it (its filters' ValueSets could not be expanded): it
    # matches nothing, and shows `error` with this reason, until this is None again.
    problem: str | None = None


def classic_topic_url(resource_type: str) -> str:
    """The implicit topic of a classic `Type?params` subscription (create and update)."""
    return CLASSIC_TOPIC_PREFIX + resource_type
