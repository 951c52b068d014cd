"""Every error leaves as an OperationOutcome, whatever raised it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from fhirstore.api.http import FhirResponse, error_response
from fhirstore.errors import FhirError, operation_outcome

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FhirError)
    async def fhir_error(_request: Request, exc: FhirError) -> Response:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = (
            f"no FHIR interaction at {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return FhirResponse(
            operation_outcome(message, code=_HTTP_CODES.get(exc.status_code, "processing")),
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return FhirResponse(operation_outcome(str(exc), code="invalid"), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return FhirResponse(
            operation_outcome(
                "internal server error; the details are in the server log. Retry the request, "
                "and report it if it keeps failing.",
                code="exception",
            ),
            status_code=500,
        )
