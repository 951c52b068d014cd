"""Every name Herald shares with what runs outside one module: Kafka topics, consumer groups,
message headers, the PostgreSQL notification channel, and canonical URLs (Herald's own, the
Subscriptions Backport IG's and the channel-type systems it accepts).

Each is a contract: a new value breaks consumers, stored resources or subscriptions already out
there, so none changes without a migration. Each line says who produces and who consumes it.
Standard HTTP headers (`Content-Type`, `User-Agent`) and FHIR core terminology used at one place
stay where they are used. This module sits in `fhirstore`, the bottom package, because the store
itself writes Herald's canonical URLs (subscription ownership, audit codes), and every package
above may import it.
"""

from __future__ import annotations

# Kafka topics (each prefixed with HERALD_KAFKA_NAMESPACE on the cluster).
# The outbox relay publishes every committed change; the matcher, scheduler and integrators read.
CHANGES_TOPIC = "fhir.changes"
# The matcher (and a WebSocket bind's retryNow) publish wake-ups; the dispatchers read.
NOTIFICATIONS_TOPIC = "herald.notifications"
# A dispatcher forwards a notification to the replica holding the socket; every replica's hub reads.
WEBSOCKET_TOPIC = "herald.websocket"
# Herald's own topics: the Kafka queue channel refuses a subscription that names one.
HERALD_TOPICS = frozenset({CHANGES_TOPIC, NOTIFICATIONS_TOPIC, WEBSOCKET_TOPIC})
# Prefixes of Herald's and Kafka's own topics (`__consumer_offsets`): closed to the queue channel.
INTERNAL_TOPIC_PREFIXES = ("herald.", "__")
# The AsyncAPI address standing for any topic a `kafka:<topic>` Subscription names (queue channel).
QUEUE_TOPIC = "{queue topic}"

# Kafka consumer groups (namespaced like the topics); the quarantine records them per message.
# The matcher reads CHANGES_TOPIC in this group (operators name it to `herald quarantine`).
MATCHER_GROUP = "herald-matcher"
# The dispatchers read NOTIFICATIONS_TOPIC in this group.
DISPATCHER_GROUP = "herald-dispatcher"
# The CarePlan scheduler reads CHANGES_TOPIC in this group.
SCHEDULER_GROUP = "herald-scheduler"

# Kafka client ids, as brokers log them and quotas name them.
# The bus's producer and consumers (relay, matcher, dispatchers, scheduler, WebSocket hub).
BUS_CLIENT_ID = "herald"
# The Kafka queue channel's producer.
QUEUE_CLIENT_ID = "herald-queue"

# Message headers.
# On CHANGES_TOPIC: the relay sets the change's event id; the quarantine and integrators read it.
EVENT_ID_HEADER = "herald-event-id"
# On WEBSOCKET_TOPIC: the forwarding replica's id (set by the hub; it skips what it sent itself).
OWNER_HEADER = "owner"
# On WEBSOCKET_TOPIC: when a forwarded handshake's delivery step read the ledger (the hub).
GREETED_BEFORE_HEADER = "greeted-before"
# REST hook and Kafka queue channel set it on every notification; receivers drop repeats by it.
IDEMPOTENCY_HEADER = "Idempotency-Key"
# The email channel's idempotency key (a mail header of Herald's own).
EMAIL_IDEMPOTENCY_HEADER = "Herald-Idempotency-Key"
# REST hook: the HMAC signature of a subscription with a signing secret; receivers verify it.
SIGNATURE_HEADER = "X-Herald-Signature"
# Kafka queue channel: the Subscription id, for readers of the topic.
SUBSCRIPTION_HEADER = "Herald-Subscription"
# Kafka queue channel: handshake, heartbeat, event-notification, ... for readers of the topic.
NOTIFICATION_TYPE_HEADER = "Herald-Notification-Type"

# PostgreSQL LISTEN/NOTIFY channel: the store notifies on commit; the relay listens.
OUTBOX_CHANNEL = "herald_outbox"

# Herald's canonical URLs. The base of every URL below that Herald defines.
HERALD_CANONICAL = "http://herald-fhir.org/fhir"
# Base of the built-in SubscriptionTopics' URLs (seeded by subscriptions/, reserved in the store).
TOPIC_BASE = HERALD_CANONICAL + "/SubscriptionTopic/"
# Built-in topic Herald seeds and matches; clients name it in Subscription criteria.
RESOURCE_CHANGE = TOPIC_BASE + "resource-change"
# Built-in topic matched when a Task (e.g. one the scheduler wrote) becomes ready; clients name it.
TASK_READY = TOPIC_BASE + "task-ready"
# Built-in topic matched when an Encounter starts; clients name it.
ENCOUNTER_START = TOPIC_BASE + "encounter-start"
# + resource type: the implicit topic Herald gives a classic `Type?params` Subscription ($status).
CLASSIC_TOPIC_PREFIX = TOPIC_BASE + "classic-"
# Subscription extension a client sets to have its REST hook notifications signed; Herald reads.
SIGNING_SECRET = HERALD_CANONICAL + "/StructureDefinition/subscription-signing-secret"
# Code system of Herald's channel types (`kafka`): clients write it, the subscription parser reads.
HERALD_CHANNEL_TYPES = HERALD_CANONICAL + "/CodeSystem/channel-type"
# Subscription extension the store stamps with the owner and reads back (access checks).
OWNER_EXTENSION = HERALD_CANONICAL + "/StructureDefinition/subscription-owner"
# meta.tag system the store stamps with the owner's subject and searches by (`_tag`).
OWNER_TAG_SYSTEM = HERALD_CANONICAL + "/CodeSystem/subscription-owner"
# AuditEvent.subtype codes the audit trail writes (operations, deliveries); auditors read.
AUDIT_SUBTYPE_SYSTEM = HERALD_CANONICAL + "/CodeSystem/audit-subtype"
# AuditEvent.type of a write by a Herald system identity (the audit trail writes; auditors read).
AUDIT_TYPE_SYSTEM = HERALD_CANONICAL + "/CodeSystem/audit-type"
# Task.identifier system the scheduler writes and finds its Tasks by (CarePlan/{id}/activity/...).
OCCURRENCE_SYSTEM = HERALD_CANONICAL + "/NamingSystem/careplan-occurrence"
# The identifier of a CarePlan made by enrolling a patient in a PlanDefinition (one per pair).
ENROLMENT_SYSTEM = HERALD_CANONICAL + "/NamingSystem/plan-enrolment"
# Herald's own `CarePlan/{id}/$schedule` (docs/scheduling.md) and R4B's PlanDefinition `$apply`.
SCHEDULE_OPERATION = HERALD_CANONICAL + "/OperationDefinition/CarePlan-schedule"
APPLY_OPERATION = "http://hl7.org/fhir/OperationDefinition/PlanDefinition-apply"
# Task.businessStatus system of the Tasks the scheduler ends itself (status `cancelled`).
BUSINESS_STATUS = HERALD_CANONICAL + "/CodeSystem/task-business-status"
# Code system of the kinds of delivery failure (channels' `Failure`: blocked, unreachable,
# timeout, rejected, unavailable) in a notification status's `error`; clients read.
DELIVERY_FAILURE_SYSTEM = HERALD_CANONICAL + "/CodeSystem/delivery-failure"
# HL7's code system of subscription delivery errors (no-response, error-response, ...), in a
# notification status's `error` beside Herald's kind; clients read.
SUBSCRIPTION_ERROR_SYSTEM = "http://terminology.hl7.org/CodeSystem/subscription-error"

# The Subscriptions R5 Backport IG.
# Its base; the CapabilityStatement names its operations and profile (below).
BACKPORT_IG = "http://hl7.org/fhir/uv/subscriptions-backport"
# Base of its StructureDefinitions (extensions and profile).
BACKPORT = BACKPORT_IG + "/StructureDefinition/"
# Subscription extension: clients write filters on the topic; the subscription parser reads.
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
# Subscription extension: clients choose empty, id-only or full-resource; the parser reads.
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
# Subscription extension: clients ask for heartbeats; the parser reads, the dispatcher sends.
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
# Subscription extension: clients bound a delivery's time; the parser reads.
TIMEOUT = BACKPORT + "backport-timeout"
# Subscription extension: clients bound events per notification; the parser reads.
MAX_COUNT = BACKPORT + "backport-max-count"
# Subscription extension: clients name a channel type R4B lacks (Herald's `kafka`); parser reads.
CHANNEL_TYPE = BACKPORT + "backport-channel-type"
# CapabilityStatement extension: Herald lists the topics it serves; clients read.
TOPIC_CANONICAL = BACKPORT + "capabilitystatement-subscriptiontopic-canonical"
# Profile Herald's CapabilityStatement says its Subscriptions follow; clients read.
BACKPORT_PROFILE = BACKPORT + "backport-subscription"
# `$status`, as Herald's CapabilityStatement defines it; clients read.
STATUS_OPERATION = BACKPORT_IG + "/OperationDefinition/backport-subscription-status"
# `$events`, as Herald's CapabilityStatement defines it; clients read.
EVENTS_OPERATION = BACKPORT_IG + "/OperationDefinition/backport-subscription-events"
# `$get-ws-binding-token`, as Herald's CapabilityStatement defines it; clients read.
WS_BINDING_TOKEN_OPERATION = (
    BACKPORT_IG + "/OperationDefinition/backport-subscription-get-ws-binding-token"
)
# Profile of the R4 notification status (a Parameters resource); R4 notifications carry it.
STATUS_R4_PROFILE = BACKPORT + "backport-subscription-status-r4"
# The IG's R4 server CapabilityStatement, which Herald's R4 statement instantiates.
SERVER_R4_CAPABILITIES = BACKPORT_IG + "/CapabilityStatement/backport-subscription-server-r4"

# Code systems of Subscription.channel.type (R4B's and R4's) clients may write; the parser reads.
CHANNEL_TYPE_SYSTEMS = frozenset(
    {
        "http://terminology.hl7.org/CodeSystem/subscription-channel-type",
        "http://hl7.org/fhir/subscription-channel-type",
    }
)
