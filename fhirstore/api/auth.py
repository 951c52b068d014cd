"""Authentication at the edge of the FHIR API: each HTTP request under the FHIR base carries a
bearer token, verified before any handler runs; the `Principal` it names is left in
`request.state.principal` for the handlers.

With authentication off every request is the unrestricted `ANONYMOUS` principal. The
CapabilityStatement (`GET [base]/metadata`) is served without a token, as clients read it to
find out how to authenticate. WebSocket connections are authenticated by their binding token
(`$get-ws-binding-token`, itself an authenticated request), not here.

Until the per-resource access boundary (scopes narrowed to a patient's compartment, at the data
layer) is in place, only administrator tokens are served: any other valid token gets 403, so
turning authentication on never exposes more than it should.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from fhirstore.access.principal import ANONYMOUS, Principal
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
        if scope["type"] != "http" or not self._guards(scope["path"]):
            await self._app(scope, receive, send)
            return
        try:
            principal = await self._principal(scope)
        except FhirError as error:
            await self._refuse(error, scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self._app(scope, receive, send)

    def _guards(self, path: str) -> bool:
        inside = path == self._prefix or path.startswith(self._prefix + "/")
        return inside and path != f"{self._prefix}/metadata"

    async def _principal(self, scope: Scope) -> Principal:
        if self._verifier is None:
            return ANONYMOUS
        header = _header(scope, b"authorization")
        principal = await self._verifier.principal(header)
        if not principal.admin:
            raise Forbidden(
                "this version of Herald serves only administrator tokens (scope "
                "herald/admin, see HERALD_ADMIN_SCOPE) while authentication is on: the "
                "per-resource access boundary for patient and user scopes is not in it yet"
            )
        return principal

    async def _refuse(self, error: FhirError, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(error)
        if isinstance(error, Unauthorized):
            response.headers["WWW-Authenticate"] = error.challenge()
        log.info(
            "request refused",
            extra={"path": scope["path"], "status": error.status, "reason": error.diagnostics},
        )
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
