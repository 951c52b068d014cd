"""FHIR R4B store: REST API, persistence, search and the transactional outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirstore import fhirjson
    from fhirstore.clock import Clock, SystemClock
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
    from fhirstore.limits import Admissions, over_limit
    from fhirstore.logsafe import chain, failed_at, frames, kinds
    from fhirstore.store import ResourceRule, Store, new_id
    from fhirstore.stored import StoredVersion
    from fhirstore.transaction import process_batch, process_transaction
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "Admissions",
    "BadRequest",
    "Clock",
    "Conflict",
    "FhirError",
    "Forbidden",
    "Gone",
    "InvalidSearch",
    "NotFound",
    "PreconditionFailed",
    "ResourceRule",
    "Store",
    "StoredVersion",
    "SystemClock",
    "Unprocessable",
    "chain",
    "failed_at",
    "fhirjson",
    "frames",
    "kinds",
    "new_id",
    "operation_outcome",
    "over_limit",
    "process_batch",
    "process_transaction",
]
