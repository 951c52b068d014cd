"""Authentication at the edge of the FHIR API: each HTTP request under the FHIR base carries a
bearer token, verified before any handler runs; the `Principal` it names is left in
`request.state.principal` for the handlers.

With authentication off every request is the unrestricted `ANONYMOUS` principal. The
CapabilityStatement (`GET [base]/metadata`) is served without a token, as clients read it to
find out how to authenticate. WebSocket connections are authenticated by their binding token
(`$get-ws-binding-token`, itself an authenticated request), not here.

What a principal may do is not decided here: handlers pass `request_access(request)` to the
store, which narrows every read, search and write to it (`fhirstore.access.boundary`).
"""

from __future__ import annotations

import logging

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from fhirstore.access.boundary import Access
from fhirstore.access.principal import ANONYMOUS, Principal
from fhirstore.access.tokens import TokenVerifier, Unauthorized
from fhirstore.api.http import error_response
from fhirstore.errors import FhirError

log = logging.getLogger(__name__)


class AuthMiddleware:
    """ASGI middleware: authenticate HTTP requests under `prefix` (None verifier: auth off)."""

    def __init__(self, app: ASGIApp, *, verifier: TokenVerifier | None, prefix: str) -> None:
        self._app = app
        self._verifier = verifier
        self._prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not guarded(scope["path"], self._prefix):
            await self._app(scope, receive, send)
            return
        try:
            principal = await self._principal(scope)
        except FhirError as error:
            await self._refuse(error, scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self._app(scope, receive, send)

    async def _principal(self, scope: Scope) -> Principal:
        if self._verifier is None:
            return ANONYMOUS
        header = _header(scope, b"authorization")
        return await self._verifier.principal(header)

    async def _refuse(self, error: FhirError, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(error)
        if isinstance(error, Unauthorized):
            response.headers["WWW-Authenticate"] = error.challenge()
        log.info(
            "request refused",
            extra={"path": scope["path"], "status": error.status, "reason": error.diagnostics},
        )
        await response(scope, receive, send)


def guarded(path: str, prefix: str) -> bool:
    """Whether a request to `path` needs a token: everything under the FHIR base `prefix`
    (without a trailing slash) except the CapabilityStatement."""
    inside = path == prefix or path.startswith(prefix + "/")
    return inside and path != f"{prefix}/metadata"


def request_principal(connection: HTTPConnection) -> Principal:
    """Who sent the request (the middleware's verdict; anonymous when auth is off)."""
    principal = connection.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else ANONYMOUS


def request_access(connection: HTTPConnection) -> Access:
    """What the request may reach: pass it to every store call made on its behalf. One per
    request (kept in its state), so `Access.granted` lists every grant the request used."""
    state = connection.scope.setdefault("state", {})
    access = state.get("access")
    if not isinstance(access, Access):
        access = state["access"] = Access(request_principal(connection))
    return access


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
