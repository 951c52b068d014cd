"""Every route of the running app is either on the explicit public list or inside the access
boundary, so a new route cannot skip it: inside means it declares `within_boundary` (every
route made on a `boundary_router` does) and sits under the FHIR base, where authentication
runs; the WebSocket endpoint declares `bound_by_token` (a socket is authorised by the binding
token a route inside the boundary issued). Then, as a client without a token: every route inside
answers 401, and the pages outside expose what the settings say."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from fhirstore.api.auth import bound_by_token, boundary_router, guarded, within_boundary
from fhirstore.clock import FrozenClock
from herald.app import PUBLIC_PATHS, create_app
from herald.settings import Settings
from tests.support.herald import running_herald
from tests.support.tokens import NOW, bearer, jwt_settings, token

BASE = "/fhir"
PUBLIC = PUBLIC_PATHS | {f"{BASE}/metadata"}
ROOT = "http://herald.test"


def _declared(route: Any) -> set[Any]:
    dependant = getattr(route, "dependant", None)
    return {d.call for d in dependant.dependencies} if dependant is not None else set()


def _routes(app: FastAPI) -> list[tuple[str, set[str], set[Any]]]:
    """(path, methods, declared dependencies) of every route the app serves."""
    return [
        (str(r.path), set(r.methods or ()), _declared(r)) for r in iter_route_contexts(app.routes)
    ]


def uncovered(app: FastAPI) -> list[str]:
    """The routes that are neither public nor inside the boundary."""
    found = []
    for path, _, declared in _routes(app):
        if path in PUBLIC:
            continue
        inside = within_boundary in declared and guarded(path, BASE)
        if not inside and bound_by_token not in declared:
            found.append(path)
    return found


def _app(tmp_path: Path, **settings: Any) -> FastAPI:
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    return create_app(Settings(database_url=url, **jwt_settings(tmp_path), **settings))


def test_every_route_is_public_or_inside_the_boundary(tmp_path: Path) -> None:
    app = _app(tmp_path, api_docs="on", metrics_access="public")
    paths = {path for path, _, _ in _routes(app)}
    assert {f"{BASE}/{{resource_type}}/{{resource_id}}", f"{BASE}/websocket"} <= paths
    assert uncovered(app) == []
    # The public list holds nothing the app does not serve (it cannot hide a stale entry).
    assert paths >= PUBLIC


def test_a_route_added_without_the_boundary_is_caught(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.get(f"{BASE}/Patient/{{patient_id}}/$export")
    async def export(patient_id: str) -> dict[str, str]:
        return {"leaked": patient_id}

    outside = boundary_router("/elsewhere")

    @outside.get("/Patient")
    async def elsewhere() -> dict[str, str]:
        return {}

    app.include_router(outside)
    assert set(uncovered(app)) == {f"{BASE}/Patient/{{patient_id}}/$export", "/elsewhere/Patient"}


def _filled(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def _boundary_requests(app: FastAPI) -> Iterable[tuple[str, str]]:
    for path, methods, declared in _routes(app):
        if within_boundary in declared:
            for method in sorted(methods - {"HEAD"}):
                yield method, _filled(path)


async def test_no_route_inside_the_boundary_answers_without_a_token(tmp_path: Path) -> None:
    async with running_herald(
        f"sqlite+aiosqlite:///{tmp_path}/herald.db",
        clock=FrozenClock(NOW),
        **jwt_settings(tmp_path),
        scheduler=False,
    ) as (runtime, client):
        app = create_app(runtime.settings, runtime=runtime)
        tried = list(_boundary_requests(app))
        assert len(tried) >= 20
        for method, path in tried:
            answer = await client.request(method, ROOT + path, json={})
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert (await client.get("/metadata")).status_code == 200


async def test_a_boundary_route_mounted_outside_the_base_serves_nobody(tmp_path: Path) -> None:
    """Authentication runs only under the FHIR base: a boundary route outside it fails closed
    instead of serving the request as an unrestricted anonymous principal."""
    app = _app(tmp_path)
    outside = boundary_router("/elsewhere")

    @outside.get("/Patient")
    async def elsewhere() -> dict[str, str]:
        return {"served": "yes"}

    app.include_router(outside)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ROOT) as client:
        answer = await client.get("/elsewhere/Patient")
    assert answer.status_code == 403
    assert "served" not in answer.text


# -- what the pages outside the FHIR API expose -----------------------------------------------


async def _pages(tmp_path: Path, headers: dict[str, str] | None = None, **settings: Any) -> dict:
    async with running_herald(
        f"sqlite+aiosqlite:///{tmp_path}/herald.db",
        clock=FrozenClock(NOW),
        subscriptions=False,
        scheduler=False,
        **settings,
    ) as (_, client):
        return {
            page: (await client.get(ROOT + page, headers=headers or {})).status_code
            for page in ("/docs", "/redoc", "/openapi.json", "/metrics", "/healthz")
        }


async def test_with_authentication_on_the_api_docs_are_off_and_metrics_public(
    tmp_path: Path,
) -> None:
    pages = await _pages(tmp_path, **jwt_settings(tmp_path))
    assert pages == {
        "/docs": 404,
        "/redoc": 404,
        "/openapi.json": 404,
        "/metrics": 200,
        "/healthz": 200,
    }


async def test_with_authentication_off_the_api_docs_are_served(tmp_path: Path) -> None:
    pages = await _pages(tmp_path)
    assert pages["/docs"] == pages["/openapi.json"] == pages["/redoc"] == 200


async def test_api_docs_on_serves_them_with_authentication_on(tmp_path: Path) -> None:
    pages = await _pages(tmp_path, api_docs="on", **jwt_settings(tmp_path))
    assert pages["/openapi.json"] == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (None, 401),
        (bearer(token(sub="ward", scope="user/*.rs")), 403),
        (bearer(token(sub="admin-1")), 200),
    ],
    ids=["no-token", "user-token", "admin-token"],
)
async def test_admin_metrics_need_an_administrator_token(
    tmp_path: Path, headers: dict[str, str] | None, status: int
) -> None:
    pages = await _pages(tmp_path, headers, metrics_access="admin", **jwt_settings(tmp_path))
    assert pages["/metrics"] == status
    assert pages["/healthz"] == 200


async def test_metrics_off_serves_no_metrics(tmp_path: Path) -> None:
    pages = await _pages(tmp_path, metrics_access="off", **jwt_settings(tmp_path))
    assert pages["/metrics"] == 404
