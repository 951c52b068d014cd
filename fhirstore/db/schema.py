"""Table definitions: current resources, every version, the search index and the outbox.

The outbox row is written in the same transaction as the resource version it describes; the
relay (events/) reads it in `seq` order and advances a cursor kept in `relay_cursor`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
    true,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants a BIGINT.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


def _where(condition: str) -> dict[str, Any]:
    """The keyword arguments of a partial index on both databases."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


resources = Table(
    "resources",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    # The current body as JSON text (None once deleted).
    Column("body", Text, nullable=True),
    Index("ix_resources_type_updated", "res_type", "last_updated"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    # create | update | delete
    Column("method", String(8), nullable=False),
    Column("body", Text, nullable=True),
    Index("ix_versions_type_updated", "res_type", "last_updated"),
    Index("ix_versions_updated", "last_updated"),
)

# One row per extracted search value of the current version of a resource.
# token:     system, code, text (display / coding text for :text)
# string:    text (normalised: lower case, accents removed), code (exact value)
# uri:       code
# reference: code ("Type/id" or absolute URL), system (target type)
# number, quantity, date: low / high (dates as UTC epoch seconds of the implied range);
#            quantity also system (unit system) and code (unit code)
search_index = Table(
    "search_index",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", String(256), nullable=True),
    Column("code", String(512), nullable=True),
    Column("text", String(512), nullable=True),
    Column("low", Float, nullable=True),
    Column("high", Float, nullable=True),
    # Correlated EXISTS / sort subqueries look entries up by resource and parameter.
    Index("ix_search_resource", "res_type", "res_id", "param"),
    # Not partial like the two below: SQLite (without ANALYZE statistics) would then prefer
    # it to ix_search_resource inside a correlated EXISTS, and scan every entry of a common
    # code (`status=requested`) for each resource.
    Index("ix_search_code", "res_type", "param", "code"),
    # The text and (SQLite) range indexes are partial: each serves only comparisons on its own
    # columns, which a NULL never satisfies, and most rows have neither (of a Task's 11 rows,
    # one has a text and three a range). A range row fills low and high together.
    # text_pattern_ops lets PostgreSQL use the index for `LIKE 'abc%'` whatever the collation.
    Index(
        "ix_search_text",
        "res_type",
        "param",
        "text",
        postgresql_ops={"text": "text_pattern_ops"},
        **_where("text IS NOT NULL"),
    ),
    # Partial on SQLite only: PostgreSQL's planner cannot tell that a comparison on `high`
    # alone (gt, ge, le) implies `low IS NOT NULL`, and would not use a partial index for it.
    Index(
        "ix_search_range",
        "res_type",
        "param",
        "low",
        "high",
        sqlite_where=text("low IS NOT NULL"),
    ),
)

outbox = Table(
    "outbox",
    metadata,
    Column("seq", _BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("previous_version_id", Integer, nullable=True),
    # create | update | delete
    Column("interaction", String(8), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=True),
    # AUTOINCREMENT: SQLite must never hand out a sequence number again, even after pruning
    # emptied the table; a reused number would sit behind the relay's cursor and be skipped.
    sqlite_autoincrement=True,
)

relay_cursor = Table(
    "relay_cursor",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# -- change-stream quarantine (events/quarantine reads and writes it) ------------------------

# One row per message a consumer group could not process after its retries, set aside so the
# group could move on: which group, which message (kept whole, for a replay), why, and whether
# a replay was asked for or has succeeded. The reason never quotes the resource.
stream_quarantine = Table(
    "stream_quarantine",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("consumer_group", String(128), nullable=False),  # herald-matcher, herald-scheduler, ..
    Column("topic", String(249), nullable=False),  # fhir.changes, herald.notifications, ...
    Column("message_key", String(256), nullable=False),  # ResourceType/id, a subscription id
    # Of a change event, when it could be read: its eventId, versionId and outbox sequence.
    Column("event_id", String(64), nullable=True),
    Column("version_id", String(64), nullable=True),
    Column("sequence", BigInteger, nullable=True),
    Column("headers", Text, nullable=False),  # JSON object
    Column("value", LargeBinary, nullable=False),
    Column("error_class", String(256), nullable=False),  # module.Class of the last error
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False),  # tries, replays included
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("replay_requested_at", DateTime(timezone=True), nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),  # a replay succeeded
    Index("ix_stream_quarantine_open", "consumer_group", "resolved_at"),
    sqlite_autoincrement=True,
)

# -- subscription bookkeeping (events/ and channels/ read and write these) -------------------

# One row per Subscription: where its event numbering and delivery stand, and who delivers it.
subscription_state = Table(
    "subscription_state",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    # requested | active | error | off (mirrored onto the Subscription resource's status)
    Column("status", String(16), nullable=False),
    # The last eventNumber handed out (SubscriptionStatus.eventsSinceSubscriptionStart).
    Column("events_since_start", BigInteger, nullable=False, default=0),
    # Every event up to this number was delivered or given up (dead-lettered).
    Column("delivered_through", BigInteger, nullable=False, default=0),
    # Last time anything (handshake, heartbeat, notification) reached the endpoint.
    Column("last_sent_at", DateTime(timezone=True), nullable=True),
    Column("error_since", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    # The process delivering this subscription, until when (a lease, renewed while it works).
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
)

# One row per (subscription, matched change): the numbered events `$events` returns.
subscription_events = Table(
    "subscription_events",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("event_number", BigInteger, primary_key=True),
    # The change event it came from: a redelivered change keeps its number.
    Column("event_id", String(36), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("interaction", String(8), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Index("ux_subscription_events_event", "subscription_id", "event_id", unique=True),
    Index("ix_subscription_events_occurred", "occurred_at"),
)

# Notifications given up after the give-up age, kept with the reason until replayed.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False),
    Column("first_event", BigInteger, nullable=False),
    Column("last_event", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("replayed_at", DateTime(timezone=True), nullable=True),
    Index("ix_dead_letters_subscription", "subscription_id"),
    sqlite_autoincrement=True,
)

# WebSocket binding tokens from `$get-ws-binding-token` (the SHA-256 of the token, never the
# token itself), usable until they expire.
websocket_tokens = Table(
    "websocket_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    # JSON: the subscriptions and the principal that asked (channels/websocket/tokens.py)
    Column("subscription_ids", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_websocket_tokens_expires", "expires_at"),
)

# Which process holds a WebSocket bound to a subscription, renewed while the socket is open:
# a dispatcher in any process can tell whether (and where) a subscription's client listens.
websocket_bindings = Table(
    "websocket_bindings",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("connection_id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_websocket_bindings_expires", "expires_at"),
)

# -- scheduler bookkeeping (scheduler/ reads and writes these) -------------------------------

# One row per CarePlan the scheduler has looked at: what it made of it, and for whom.
schedule_plans = Table(
    "schedule_plans",
    metadata,
    Column("careplan_id", String(64), primary_key=True),
    # The CarePlan version last reconciled (None once the CarePlan is deleted).
    Column("version_id", Integer, nullable=True),
    # "Patient/{id}" the Tasks are for: a change of the Patient's time zone reschedules.
    Column("patient", String(128), nullable=True),
    Column("zone", String(64), nullable=False),  # the IANA zone its Tasks' times are in
    # Whether the CarePlan is scheduled at all (active, plan or order, tagged if required).
    Column("scheduled", Boolean, nullable=False),
    # JSON: why the CarePlan or some of its activities are not materialised ([] when all are).
    Column("report", Text, nullable=False),
    Column("reconciled_at", DateTime(timezone=True), nullable=False),
    # What a sweep compares to leave the CarePlan alone (see scheduler/settled.py): the
    # Patient version it was planned with (None: no Patient), the policy's fingerprint, and
    # the instant up to which its Tasks cover the schedule (once now + horizon passes it, it
    # wants more; None: reconcile it at the next sweep).
    Column("patient_version", Integer, nullable=True),
    Column("policy", String(64), nullable=True),
    Column("covered_until", DateTime(timezone=True), nullable=True),
    Index("ix_schedule_plans_patient", "patient"),
)

# One row per Task the scheduler made for an occurrence, and what it does to it next.
schedule_tasks = Table(
    "schedule_tasks",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("careplan_id", String(64), nullable=False),
    Column("activity", String(64), nullable=False),
    Column("start", DateTime(timezone=True), nullable=False),  # the occurrence, UTC
    # The Task version Herald wrote or last saw: a different current version means someone
    # else changed the Task since.
    Column("task_version", Integer, nullable=False),
    # requested | ready | missed | unscheduled | released (moved on by someone: hands off)
    Column("state", String(16), nullable=False),
    # When the Task next needs Herald (ready at start - lead, missed at start + grace).
    Column("due_at", DateTime(timezone=True), nullable=True),
    # Whether the schedule wanted the occurrence when the CarePlan was last reconciled.
    # The server default is the migration's (0005), which gave existing rows True.
    Column("wanted", Boolean, nullable=False, server_default=true()),
    Index("ix_schedule_tasks_plan", "careplan_id", "start"),
    Index("ix_schedule_tasks_due", "due_at"),
)

# -- audit trail (fhirstore/access/audit.py writes it, append-only) --------------------------

# One row per REST request under the FHIR base (authorised, refused, or failing
# authentication) and per delivery attempt: who, what, when, how it went and which grant
# allowed it. Never a resource body.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # rest | delivery | authentication (a request refused before it had a principal) |
    # system (a write by Herald's own system identity, e.g. the scheduler)
    Column("kind", String(16), nullable=False),
    # read, vread, search-type, history-*, create, update, delete, transaction, batch, an
    # operation name ($events), ...; for a delivery the channel type (rest-hook, email, ...)
    Column("interaction", String(64), nullable=False),
    # the HTTP status ("403"), or for a delivery `delivered` | `failed`
    Column("outcome", String(16), nullable=False),
    Column("reason", Text, nullable=True),  # short, never a body
    Column("subject", String(256), nullable=True),
    Column("client", String(256), nullable=True),
    Column("patient", String(64), nullable=True),  # the token's patient context
    Column("granted_by", Text, nullable=True),  # space-separated scopes (or `administrator`)
    # The resource (a delivery: its Subscription); the type alone for type-level interactions.
    Column("res_type", String(64), nullable=True),
    Column("res_id", String(64), nullable=True),
    Column("query", Text, nullable=True),  # search parameter names, without their values
    # Deliveries: handshake | heartbeat | event-notification, the eventNumbers carried, and
    # where to (a REST hook's origin only: paths and queries may hold secrets).
    Column("notification", String(32), nullable=True),
    Column("first_event", BigInteger, nullable=True),
    Column("last_event", BigInteger, nullable=True),
    Column("endpoint", Text, nullable=True),
    # A REST request's id (`X-Request-ID`, also in every log line written while serving it)
    Column("request_id", String(64), nullable=True),
    Index("ix_audit_log_recorded", "recorded_at"),
    Index("ix_audit_log_request", "request_id"),
    sqlite_autoincrement=True,
)
