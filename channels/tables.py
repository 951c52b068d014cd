"""The channels' tables: WebSocket binding tokens and which process holds which WebSocket
(channels/websocket).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, String, Table, Text

from fhirstore.db import UtcDateTime, metadata

# WebSocket binding tokens from `$get-ws-binding-token` (the SHA-256 of the token, never the
# token itself), usable until they expire.
websocket_tokens = Table(
    "websocket_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    # JSON: the subscriptions and the principal that asked (channels/websocket/tokens.py)
    Column("subscription_ids", Text, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
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
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_websocket_bindings_expires", "expires_at"),
)
