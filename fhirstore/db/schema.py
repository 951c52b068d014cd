"""The store's tables: current resources, every version, the search index, the outbox and
the audit trail; and the one `metadata` every package declares its own tables on.

`search_index_state` records which version of the index extraction built `search_index`
(fhirstore/search/index_version.py, fhirstore/reindex.py).
The outbox row is written in the same transaction as the resource version it describes; the
relay (events/) reads it, through `fhirstore.outbox`, in `seq` order. Other packages declare
their tables in their own `tables` module (events, subscriptions, channels, scheduler) on this
`metadata`, and never read or write these: what they need of the store's data is a method of
the store (`fhirstore.store`, `fhirstore.outbox`, `fhirstore.joins`). One Alembic history
(`fhirstore/migrations/`) creates them all.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from fhirstore.db.types import BigId, UtcDateTime

metadata = MetaData()


def _where(condition: str) -> dict[str, Any]:
    """The keyword arguments of a partial index on both databases."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


resources = Table(
    "resources",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", UtcDateTime, nullable=False),
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
    Column("last_updated", UtcDateTime, nullable=False),
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
    Column("id", BigId, primary_key=True, autoincrement=True),
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

# Which extraction built the search index (`fhirstore.search.index_version.INDEX_VERSION`), and
# where a rebuild by a newer one stands (fhirstore/reindex.py). One row, id 1.
search_index_state = Table(
    "search_index_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    # Every live resource's rows were written by this extraction version (or a later one).
    Column("built_by", Integer, nullable=False),
    # A rebuild in progress writes this version's rows; None when none is under way.
    Column("building", Integer, nullable=True),
    # The rebuild's cursor: the last resource (type, id) whose rows it has written.
    Column("after_type", String(64), nullable=True),
    Column("after_id", String(64), nullable=True),
    # Its progress, for messages and metrics: live resources done, and how many there were.
    Column("done", Integer, nullable=False, default=0),
    Column("total", Integer, nullable=False, default=0),
)

outbox = Table(
    "outbox",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("previous_version_id", Integer, nullable=True),
    # create | update | delete
    Column("interaction", String(8), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("body", Text, nullable=True),
    # AUTOINCREMENT: SQLite must never hand out a sequence number again, even after pruning
    # emptied the table; a reused number would sit behind the relay's cursor and be skipped.
    sqlite_autoincrement=True,
)

# -- audit trail (fhirstore/access/audit.py writes it, append-only) --------------------------

# One row per REST request under the FHIR base (authorised, refused, or failing
# authentication) and per delivery attempt: who, what, when, how it went and which grant
# allowed it. Never a resource body.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("recorded_at", UtcDateTime, nullable=False),
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
