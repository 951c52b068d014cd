"""Errors as first-class types. Each maps to one HTTP status and one OperationOutcome issue."""

from __future__ import annotations

from typing import Any


class FhirError(Exception):
    """A request that cannot be honoured. `status` is the HTTP status to answer with."""

    status: int = 400
    code: str = "processing"  # OperationOutcome.issue.code (IssueType value set)

    def __init__(self, diagnostics: str, *, expression: list[str] | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression or []

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.diagnostics, code=self.code, expression=self.expression)


def operation_outcome(
    diagnostics: str,
    *,
    code: str = "processing",
    severity: str = "error",
    expression: list[str] | None = None,
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class BadRequest(FhirError):
    status = 400
    code = "invalid"


class InvalidSearch(BadRequest):
    """An unknown search parameter, modifier or malformed search value."""

    code = "not-supported"


class Forbidden(FhirError):
    """Authenticated, but not allowed to do this."""

    status = 403
    code = "forbidden"


class NotFound(FhirError):
    status = 404
    code = "not-found"


class UnknownResourceType(NotFound):
    code = "not-supported"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class Gone(FhirError):
    status = 410
    code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class PayloadTooLarge(FhirError):
    status = 413
    code = "too-costly"


class NotAcceptable(FhirError):
    """The client asked (`Accept`, `_format`) for a representation this server cannot give,
    such as a FHIR version it does not serve."""

    status = 406
    code = "not-supported"


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"


class Unprocessable(FhirError):
    """A well-formed resource that breaks the FHIR rules (the failing element is named)."""

    status = 422
    code = "invalid"


class InsufficientStorage(FhirError):
    """The database has no room left for a write (disk or quota full); reads still work."""

    status = 507
    code = "no-store"
