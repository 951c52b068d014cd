"""The change stream's tables: the relay's cursor (events/relay.py) and the quarantine of
messages a consumer group could not process (events/quarantine).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text

from fhirstore.db import BigId, UtcDateTime, metadata

# Where the outbox relay stands: every outbox row up to `position` is published.
relay_cursor = Table(
    "relay_cursor",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# One row per message a consumer group could not process after its retries, set aside so the
# group could move on: which group, which message (kept whole, for a replay), why, and whether
# a replay was asked for or has succeeded. The reason never quotes the resource.
stream_quarantine = Table(
    "stream_quarantine",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
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
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("replay_requested_at", UtcDateTime, nullable=True),
    Column("resolved_at", UtcDateTime, nullable=True),  # a replay succeeded
    Index("ix_stream_quarantine_open", "consumer_group", "resolved_at"),
    sqlite_autoincrement=True,
)
