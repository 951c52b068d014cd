"""What the CapabilityStatement says about subscriptions: the topics served (the Backport IG's
`subscriptiontopic-canonical` extension), the `$status`, `$events` and `$get-ws-binding-token`
operations and the Backport Subscription profile. The same in R4 and R4B (R4 clients learn the
topics from the extension, as R4 has no SubscriptionTopic); the R4 statement also
`instantiates` the IG's R4 server CapabilityStatement."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fhirstore.wire import (
    BACKPORT_PROFILE,
    EVENTS_OPERATION,
    SERVER_R4_CAPABILITIES,
    STATUS_OPERATION,
    TOPIC_CANONICAL,
    WS_BINDING_TOKEN_OPERATION,
)

OPERATIONS = (
    ("status", STATUS_OPERATION),
    ("events", EVENTS_OPERATION),
    ("get-ws-binding-token", WS_BINDING_TOKEN_OPERATION),
)


def subscription_capabilities(
    topic_urls: Callable[[], Iterable[str]],
) -> Callable[[dict[str, Any]], None]:
    """An addition for `fhir_router`: marks up the Subscription entry of the statement."""

    def add(statement: dict[str, Any]) -> None:
        if str(statement.get("fhirVersion", "")).startswith("4.0."):
            statement.setdefault("instantiates", []).append(SERVER_R4_CAPABILITIES)
        for rest in statement.get("rest", []):
            for resource in rest.get("resource", []):
                if resource.get("type") == "Subscription":
                    _describe(resource, sorted(topic_urls()))

    return add


def _describe(resource: dict[str, Any], urls: list[str]) -> None:
    resource.setdefault("extension", []).extend(
        {"url": TOPIC_CANONICAL, "valueCanonical": url} for url in urls
    )
    resource.setdefault("supportedProfile", []).append(BACKPORT_PROFILE)
    resource.setdefault("operation", []).extend(
        {"name": name, "definition": definition} for name, definition in OPERATIONS
    )
