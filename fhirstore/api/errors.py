"""Every error leaves as an OperationOutcome, whatever raised it, on a connection that stays open.

FastAPI's exception handlers answer `FhirError`, HTTP errors and request validation errors,
and a full disk (`storage_full`) with 507. Anything else reaches `ErrorBoundary`, the outermost
middleware, which answers 500 with an OperationOutcome and returns normally: the connection
stays usable for the client's next request. (Starlette's own last resort answers 500 too but
then raises again, and uvicorn drops the connection without `Connection: close`, leaving a
client unsure whether its POST went through.) Only an error after the answer had started is
a dropped connection, as the answer cannot be completed.

`ErrorBoundary` also names each HTTP request: a request id (the client's `X-Request-ID` when
it is a short plain token, else a new one), sent back as `X-Request-ID`, quoted in a 500's
OperationOutcome, carried by every log line written while the request is served (the
`request_id` field) and stored in the request's audit entry (`GET [base]/AuditEvent?request-id=`
finds it). The log line of a 500 also names the interaction, resource type and id, and where
it failed (the exception types and the stack), never a message, a body or a search value:
exception messages may quote any of them.
"""

from __future__ import annotations

import logging
import re
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bound_contextvars

from fhirstore.api.audit import REQUEST_ID_STATE, classify
from fhirstore.api.http import FhirResponse, error_response
from fhirstore.api.storage_full import is_storage_full, storage_full
from fhirstore.errors import FhirError, operation_outcome
from fhirstore.logsafe import frames, kinds

log = logging.getLogger(__name__)

REQUEST_ID = "X-Request-ID"
_REQUEST_ID = REQUEST_ID.lower().encode()
_CLIENT_ID = re.compile(rb"[A-Za-z0-9._:-]{8,64}")  # a client's id, kept when this plain
_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly"}


def install_error_handlers(app: FastAPI, *, prefix: str = "/fhir") -> None:
    """The exception handlers, and `ErrorBoundary` as the outermost middleware (install them
    after the other middleware)."""

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

    @app.exception_handler(DBAPIError)
    @app.exception_handler(OSError)
    async def storage_error(request: Request, exc: Exception) -> Response:
        if not is_storage_full(exc):
            raise exc  # on to ErrorBoundary: a 500
        log.error(
            "database storage full: a write was refused with 507",
            extra={"method": request.method, "path": request.url.path, "error": kinds(exc)},
        )
        return error_response(storage_full())

    app.add_middleware(ErrorBoundary, prefix=prefix)


class ErrorBoundary:
    """ASGI middleware: a request id for every HTTP request, and a 500 OperationOutcome for
    any error nothing else answered (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self._app = app
        self._prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})[REQUEST_ID_STATE] = request_id  # for the audit trail
        header = (_REQUEST_ID, request_id.encode())
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with bound_contextvars(request_id=request_id):
            try:
                await self._app(scope, receive, sending)
            except Exception as error:
                self._log(scope, error, request_id, answered=started)
                if not started:
                    await _internal_error(request_id)(scope, receive, sending)

    def _log(self, scope: Scope, error: Exception, request_id: str, *, answered: bool) -> None:
        path: str = scope["path"]
        target = None
        if path == self._prefix or path.startswith(self._prefix + "/"):
            segments = [s for s in path[len(self._prefix) :].split("/") if s]
            target = classify(scope["method"], segments)
        log.error(
            "the answer was cut short by an unexpected error; the connection is closed"
            if answered
            else "unexpected error: answered 500",
            extra={
                "request_id": request_id,
                "method": scope["method"],
                "interaction": target.interaction if target else None,
                "resource_type": target.res_type if target else None,
                "resource_id": target.res_id if target else None,
                "error": kinds(error),
                "stack": frames(error),
            },
        )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == _REQUEST_ID and _CLIENT_ID.fullmatch(value):
            return bytes(value).decode()
    return uuid.uuid4().hex


def _internal_error(request_id: str) -> FhirResponse:
    return FhirResponse(
        operation_outcome(
            f"internal server error (request id {request_id}). If this was a write, read the "
            "resource (or search for it) to see whether it was stored before sending it again. "
            "Report the request id to the server's operator if it keeps failing.",
            code="exception",
        ),
        status_code=500,
    )
