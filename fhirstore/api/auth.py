"""Authentication at the edge of the FHIR API: each HTTP request under the FHIR base carries a
bearer token, verified before any handler runs; the `Principal` it names is left in
`request.state.principal` for the handlers.

With authentication off every request is the unrestricted `ANONYMOUS` principal. The
CapabilityStatement (`GET [base]/metadata`) is served without a token, as clients read it to
find out how to authenticate. WebSocket connections are authenticated by their binding token
(`$get-ws-binding-token`, itself an authenticated request), not here.

What a principal may do is not decided here: handlers pass `request_access(request)` to the
store, which narrows every read, search and write to it (`fhirstore.access.boundary`).

Every route that serves FHIR data is made on a `boundary_router`, whose routes all declare the
`within_boundary` dependency: it fails closed (403) for a request the middleware did not
authenticate (a route mounted outside the FHIR base), and it is the marker the route test
(`tests/fhirstore/access/test_routes.py`) looks for, so a new route cannot skip the boundary
unnoticed.
The WebSocket endpoint declares `bound_by_token` instead: a socket is authorised by the binding
token that `$get-ws-binding-token` (a route inside the boundary) issued.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from fhirstore.access.boundary import Access
from fhirstore.access.principal import ANONYMOUS, NOBODY, Principal
from fhirstore.access.tokens import TokenVerifier, Unauthorized
from fhirstore.api.http import error_response
from fhirstore.errors import FhirError, Forbidden

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
    """Who sent the request (the middleware's verdict; anonymous when auth is off). A request
    the middleware never saw is nobody: no scopes, not an administrator (fail closed)."""
    principal = connection.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else NOBODY


async def within_boundary(connection: HTTPConnection) -> None:
    """The dependency of every route inside the access boundary: refuse (403) a request that
    authentication did not see, instead of serving it as somebody."""
    if not isinstance(connection.scope.get("state", {}).get("principal"), Principal):
        raise Forbidden(
            "this route is not behind Herald's authentication (it is outside the FHIR base); "
            "it serves nobody until it is mounted under the FHIR base"
        )


async def bound_by_token(connection: HTTPConnection) -> None:
    """The marker of the WebSocket endpoint: each socket is authorised by a binding token
    issued inside the boundary (`$get-ws-binding-token`), checked when it binds."""


def boundary_router(prefix: str) -> APIRouter:
    """A router under the FHIR base whose every route declares `within_boundary`."""
    return APIRouter(prefix=prefix, dependencies=[Depends(within_boundary)])


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
