"""FHIR R4B store: REST API, persistence, search, validation, the access boundary and the
transactional outbox; and, as the bottom package every other may import, what they all share:
the clock, the backoff policy, the periodic-loop helper, leadership and the wire names."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirstore import fhirjson
    from fhirstore.background import run_in_background
    from fhirstore.backoff import Backoff
    from fhirstore.clock import Clock, SystemClock, sleep_or_wake
    from fhirstore.errors import (
        BadRequest,
        Conflict,
        FhirError,
        Forbidden,
        Gone,
        InvalidSearch,
        NotFound,
        PreconditionFailed,
        Unprocessable,
        operation_outcome,
    )
    from fhirstore.joins import CurrentVersions, IndexedValues
    from fhirstore.limits import Admissions, over_limit
    from fhirstore.logsafe import chain, failed_at, frames, kinds
    from fhirstore.outbox import (
        OutboxEntry,
        entries_after,
        entries_of_types,
        newest_sequence,
        prune,
        sequence_bounds,
    )
    from fhirstore.periodic import Periodic
    from fhirstore.reindex import RebuildProgress, Reindex
    from fhirstore.store import ResourceRule, Store, new_id
    from fhirstore.stored import (
        StoredVersion,
        first_stored,
        live_of_type,
        token_holders,
        versions_in,
    )
    from fhirstore.transaction import process_batch, process_transaction
    from fhirstore.validation.pool import ValidationPool
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "Admissions",
    "Backoff",
    "BadRequest",
    "Clock",
    "Conflict",
    "CurrentVersions",
    "FhirError",
    "Forbidden",
    "Gone",
    "IndexedValues",
    "InvalidSearch",
    "NotFound",
    "OutboxEntry",
    "Periodic",
    "PreconditionFailed",
    "RebuildProgress",
    "Reindex",
    "ResourceRule",
    "Store",
    "StoredVersion",
    "SystemClock",
    "Unprocessable",
    "ValidationPool",
    "chain",
    "entries_after",
    "entries_of_types",
    "failed_at",
    "fhirjson",
    "first_stored",
    "frames",
    "kinds",
    "live_of_type",
    "new_id",
    "newest_sequence",
    "operation_outcome",
    "over_limit",
    "process_batch",
    "process_transaction",
    "prune",
    "run_in_background",
    "sequence_bounds",
    "sleep_or_wake",
    "token_holders",
    "versions_in",
]
