"""Topic-based and classic subscriptions: topics, parsing, matching, notifications."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from subscriptions.capability import subscription_capabilities
    from subscriptions.channel import ChannelSupport
    from subscriptions.dead_letters import DeadLetter
    from subscriptions.fhirpath_budget import FhirPathBudget, FhirPathRunner
    from subscriptions.focus import notification_events
    from subscriptions.ledger import Ledger, SubscriptionProgress
    from subscriptions.lifecycle import Lifecycle
    from subscriptions.marks import ErrorMarks
    from subscriptions.matcher import (
        NOTIFICATION_JOBS,
        Matcher,
        NotificationJob,
        notification_job,
        read_job,
    )
    from subscriptions.missed_by_budget import MissedByBudgetReporter
    from subscriptions.model import Channel, NotificationType, SubscriptionSpec
    from subscriptions.notification import (
        NotificationBundle,
        NotificationEvent,
        classic_body,
        notification_bundle,
    )
    from subscriptions.numbering import RecordedEvent
    from subscriptions.operations import operation_parameters, stored_spec, subscription_router
    from subscriptions.registry import SUBSCRIPTION, SUBSCRIPTION_TOPIC, SubscriptionRegistry
    from subscriptions.rules import OwnerLimit, owned_topic_rule, subscription_rule
    from subscriptions.seeding import BUILTIN_TOPIC_RESERVATION, seed_builtin_topics
    from subscriptions.unloaded import Unloaded, UnloadedTopic
    from subscriptions.unloaded_reporter import UnloadedReporter
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "BUILTIN_TOPIC_RESERVATION",
    "NOTIFICATION_JOBS",
    "SUBSCRIPTION",
    "SUBSCRIPTION_TOPIC",
    "Channel",
    "ChannelSupport",
    "DeadLetter",
    "ErrorMarks",
    "FhirPathBudget",
    "FhirPathRunner",
    "Ledger",
    "Lifecycle",
    "Matcher",
    "MissedByBudgetReporter",
    "NotificationBundle",
    "NotificationEvent",
    "NotificationJob",
    "NotificationType",
    "OwnerLimit",
    "RecordedEvent",
    "SubscriptionProgress",
    "SubscriptionRegistry",
    "SubscriptionSpec",
    "Unloaded",
    "UnloadedReporter",
    "UnloadedTopic",
    "classic_body",
    "notification_bundle",
    "notification_events",
    "notification_job",
    "operation_parameters",
    "owned_topic_rule",
    "read_job",
    "seed_builtin_topics",
    "stored_spec",
    "subscription_capabilities",
    "subscription_router",
    "subscription_rule",
]
