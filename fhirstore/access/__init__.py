"""The access boundary: who asks (tokens, principals) and what they may do (scopes, compartment)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirstore.access.acting import ActingAs, Record
    from fhirstore.access.audit import DELIVERED, FAILED, AuditEntry, AuditTrail
    from fhirstore.access.boundary import Access
    from fhirstore.access.ownership import owner_of
    from fhirstore.access.principal import ANONYMOUS, Principal
    from fhirstore.access.reserved import Reserved
    from fhirstore.access.scopes import Scopes
    from fhirstore.access.tokens import TokenRules, TokenVerifier
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "ANONYMOUS",
    "DELIVERED",
    "FAILED",
    "Access",
    "ActingAs",
    "AuditEntry",
    "AuditTrail",
    "Principal",
    "Record",
    "Reserved",
    "Scopes",
    "TokenRules",
    "TokenVerifier",
    "owner_of",
]
