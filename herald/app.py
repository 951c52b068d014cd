"""The FastAPI application: FHIR API under /fhir, health, readiness and metrics.

Outside the FHIR base (where every route declares the access boundary, see
`fhirstore.api.auth`) the app serves only the pages in `PUBLIC_PATHS`: health and readiness
(no data), `/metrics` as `HERALD_METRICS_ACCESS` says, and the API documentation
(`/docs`, `/redoc`, `/openapi.json`) as `HERALD_API_DOCS` says: by default only while
authentication is off, since it maps every route for whoever asks.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from channels.websocket import websocket_router
from events.quarantine import quarantine_router
from fhirstore import Clock, Forbidden
from fhirstore.access import TokenRules, TokenVerifier
from fhirstore.api import (
    AuditMiddleware,
    AuthMiddleware,
    audit_capabilities,
    audit_event_router,
    fhir_router,
    install_error_handlers,
)
from herald import __version__
from herald.metrics import MetricsMiddleware, metrics_endpoint
from herald.runtime import Runtime, schedule_policy
from herald.settings import Settings
from scheduler import enrolment_router, schedule_capabilities, schedule_router
from subscriptions import subscription_capabilities, subscription_router

log = logging.getLogger(__name__)

# Every path served without the access boundary; `tests/fhirstore/access/test_routes.py` holds the
# app to it (the FHIR base's are `{base}/metadata`, the CapabilityStatement clients read first).
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


def token_verifier(settings: Settings, clock: Clock) -> TokenVerifier | None:
    """The bearer token verifier `HERALD_AUTH=jwt` asks for (None: authentication off)."""
    if settings.auth == "off":
        return None
    rules = TokenRules(
        secret=settings.jwt_secret,
        jwks_file=settings.jwks_file,
        jwks_url=settings.jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
        admin_scope=settings.admin_scope,
    )
    return TokenVerifier(rules, clock)


def _warn_if_open(settings: Settings) -> None:
    if settings.auth == "off":
        hooks = (
            ""
            if settings.endpoint_guard
            else ", and REST hooks may reach loopback and private addresses"
        )
        log.warning(
            "AUTHENTICATION IS OFF: anyone who can reach %s:%s can read and write every "
            "resource%s. Fine on a laptop; in production set HERALD_AUTH=jwt with "
            "HERALD_JWKS_URL, HERALD_JWT_ISSUER and HERALD_JWT_AUDIENCE (see "
            "docs/access.md).",
            settings.host,
            settings.port,
            hooks,
        )


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, own_runtime: bool = True
) -> FastAPI:
    """The API of `runtime`. Its lifespan starts and stops the runtime, unless `own_runtime`
    is False: then the caller does (`herald serve` starts it before it serves)."""
    settings = settings or Settings()
    runtime = runtime or Runtime(settings)
    verifier = token_verifier(settings, runtime.clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        _warn_if_open(settings)
        if not own_runtime:
            yield
            return
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    docs = settings.api_docs == "on" or (settings.api_docs == "auto" and verifier is None)
    app = FastAPI(
        title="Herald",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.runtime = runtime
    app.add_middleware(AuthMiddleware, verifier=verifier, prefix=settings.fhir_base_path)
    if settings.audit:  # outside authentication, so that it sees refused tokens too
        app.add_middleware(AuditMiddleware, trail=runtime.audit, prefix=settings.fhir_base_path)
    app.add_middleware(MetricsMiddleware)
    install_error_handlers(app, prefix=settings.fhir_base_path)  # outermost: after the others

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        if not runtime.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        try:
            async with runtime.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return JSONResponse({"status": "database unreachable", "error": str(exc)}, 503)
        return JSONResponse({"status": "ready"})

    if settings.metrics_access != "off":

        @app.get("/metrics", include_in_schema=False)
        async def metrics(request: Request) -> Response:
            if settings.metrics_access == "admin" and verifier is not None:
                principal = await verifier.principal(request.headers.get("authorization"))
                if not principal.admin:
                    raise Forbidden(
                        "/metrics is for administrators here (HERALD_METRICS_ACCESS=admin): "
                        "send a token with the administrator scope"
                    )
            return metrics_endpoint()

    # Every router serves the one FHIR base, with the same links, limits and page sizes.
    base: dict[str, Any] = {
        "prefix": settings.fhir_base_path,
        "public_base": settings.public_base_url,
        "max_body_bytes": settings.max_body_bytes,
    }
    pages: dict[str, Any] = {
        "default_count": settings.default_page_size,
        "max_count": settings.max_page_size,
    }
    # Operation routes first: the generic `/{type}/{id}` routes would take them otherwise.
    app.include_router(subscription_router(runtime.store, runtime.ledger, runtime.registry, **base))
    app.include_router(
        websocket_router(
            runtime.store,
            runtime.ledger,
            runtime.registry,
            runtime.binding_tokens,
            runtime.hub,
            **base,
            nudge=runtime.nudge,
            record_attempt=runtime.record_attempt,
            record_write=runtime.record_write,
        )
    )
    app.include_router(schedule_router(runtime.store, prefix=settings.fhir_base_path))
    app.include_router(enrolment_router(runtime.store, schedule_policy(settings), **base))
    app.include_router(audit_event_router(runtime.audit, **base, **pages))
    app.include_router(
        quarantine_router(
            runtime.quarantine,
            prefix=settings.fhir_base_path,
            max_body_bytes=settings.max_body_bytes,
        )
    )
    app.include_router(
        fhir_router(
            runtime.store,
            **base,
            **pages,
            max_bundle_entries=settings.max_bundle_entries,
            software_version=__version__,
            capability_additions=[
                subscription_capabilities(runtime.registry.index.topic_urls),
                audit_capabilities,
                schedule_capabilities,
            ],
        )
    )
    return app
