"""The FastAPI application: FHIR API under /fhir, health, readiness and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from channels.websocket.api import websocket_router
from events.subscriptions.capability import subscription_capabilities
from events.subscriptions.operations import subscription_router
from fhirstore.api.errors import install_error_handlers
from fhirstore.api.routes import fhir_router
from herald import __version__
from herald.metrics import MetricsMiddleware, metrics_endpoint
from herald.runtime import Runtime
from herald.settings import Settings
from scheduler.api import schedule_router


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="Herald",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.runtime = runtime
    app.add_middleware(MetricsMiddleware)
    install_error_handlers(app)

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

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return metrics_endpoint()

    # Operation routes first: the generic `/{type}/{id}` routes would take them otherwise.
    app.include_router(
        subscription_router(
            runtime.store,
            runtime.ledger,
            runtime.registry,
            prefix=settings.fhir_base_path,
            public_base=settings.public_base_url,
            max_body_bytes=settings.max_body_bytes,
        )
    )
    app.include_router(
        websocket_router(
            runtime.store,
            runtime.ledger,
            runtime.registry,
            runtime.binding_tokens,
            runtime.hub,
            prefix=settings.fhir_base_path,
            public_base=settings.public_base_url,
            max_body_bytes=settings.max_body_bytes,
            nudge=runtime.nudge,
        )
    )
    app.include_router(schedule_router(runtime.store, prefix=settings.fhir_base_path))
    app.include_router(
        fhir_router(
            runtime.store,
            prefix=settings.fhir_base_path,
            public_base=settings.public_base_url,
            max_body_bytes=settings.max_body_bytes,
            default_count=settings.default_page_size,
            max_count=settings.max_page_size,
            software_version=__version__,
            capability_additions=[subscription_capabilities(runtime.registry.index.topic_urls)],
        )
    )
    return app
