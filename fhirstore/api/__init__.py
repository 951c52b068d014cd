"""The FHIR R4B REST API (FastAPI): interactions, Bundles, CapabilityStatement, error mapping."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirstore.api.audit import AuditMiddleware
    from fhirstore.api.audit_events import (
        AUDIT_EVENT,
        audit_capabilities,
        audit_event_router,
        refuse_writes,
    )
    from fhirstore.api.auth import (
        AuthMiddleware,
        bound_by_token,
        boundary_router,
        request_access,
        request_principal,
    )
    from fhirstore.api.errors import install_error_handlers
    from fhirstore.api.http import FhirResponse, read_json_body, whole_number
    from fhirstore.api.negotiation import fhir_media_type, requested_fhir_version
    from fhirstore.api.routes import fhir_router
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "AUDIT_EVENT",
    "AuditMiddleware",
    "AuthMiddleware",
    "FhirResponse",
    "audit_capabilities",
    "audit_event_router",
    "bound_by_token",
    "boundary_router",
    "fhir_media_type",
    "fhir_router",
    "install_error_handlers",
    "read_json_body",
    "refuse_writes",
    "request_access",
    "request_principal",
    "requested_fhir_version",
    "whole_number",
]
