"""Database access: the store's tables, the shared metadata and column types every package's
tables use, engine creation, migrations, locks and the write path.

(`upsert` stays in `fhirstore.db.upsert`: offered here, the function would be hidden by its
module of the same name as soon as that module is imported.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirstore.db.engine import create_engine, is_sqlite
    from fhirstore.db.leadership import Lead, Leadership, LeadershipLost
    from fhirstore.db.locks import (
        CAREPLAN_LOCK_CLASS,
        REINDEX_LOCK_KEY,
        RELAY_LOCK_KEY,
        SCHEDULER_LOCK_KEY,
        int4_key,
    )
    from fhirstore.db.migrate import upgrade
    from fhirstore.db.schema import metadata
    from fhirstore.db.statistics import BulkStatistics
    from fhirstore.db.types import BigId, UtcDateTime
    from fhirstore.db.writer import Head, PendingWrite, WrittenVersion, fhir_instant
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "CAREPLAN_LOCK_CLASS",
    "REINDEX_LOCK_KEY",
    "RELAY_LOCK_KEY",
    "SCHEDULER_LOCK_KEY",
    "BigId",
    "BulkStatistics",
    "Head",
    "Lead",
    "Leadership",
    "LeadershipLost",
    "PendingWrite",
    "UtcDateTime",
    "WrittenVersion",
    "create_engine",
    "fhir_instant",
    "int4_key",
    "is_sqlite",
    "metadata",
    "upgrade",
]
