"""Another patient's resource looks exactly like one that does not exist, on every interaction a
patient token can try, writes included, on both databases: same status, same body (but for the
id), nothing written. Hidden is decided from the search index, never from the stored body: the
hidden resource's stored body is replaced by a megabyte that is not JSON, so a path that parsed
it to decide would answer 500 instead of 404."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from fhirstore.clock import FrozenClock
from fhirstore.db.schema import resource_versions, resources
from herald.runtime import Runtime
from tests.fhirstore.access.test_boundary import _observation
from tests.support.herald import running_herald, stored_counts
from tests.support.tokens import NOW, bearer, jwt_settings, token

ADMIN = bearer(token(sub="admin-1"))
ALICE = bearer(token(sub="alice", scope="openid launch/patient patient/*.cruds", patient="p1"))
HIDDEN, DELETED, MISSING = (
    "zq-hidden1",
    "zq-deleted",
    "zq-missing",
)  # same length: bodies compare once ids are swapped

Herald = tuple[Runtime, httpx.AsyncClient]


@pytest.fixture
async def herald(database_url: str, tmp_path: Path) -> AsyncIterator[Herald]:
    async with running_herald(
        database_url,
        clock=FrozenClock(NOW),
        **jwt_settings(tmp_path),
        subscriptions=False,
        scheduler=False,
    ) as (runtime, client):
        for resource in (
            {"resourceType": "Patient", "id": "p1"},
            {"resourceType": "Patient", "id": "p2"},
            _observation(HIDDEN, "Patient/p2"),
            _observation(DELETED, "Patient/p2"),
        ):
            path = f"/{resource['resourceType']}/{resource['id']}"
            assert (await client.put(path, json=resource, headers=ADMIN)).status_code == 201
        assert (await client.delete(f"/Observation/{DELETED}", headers=ADMIN)).status_code == 204
        garbage = "x" * 1_000_000  # not JSON: parsing it would fail loudly
        async with runtime.engine.begin() as conn:
            for table in (resources, resource_versions):
                await conn.execute(
                    update(table)
                    .where(table.c.res_type == "Observation", table.c.res_id == HIDDEN)
                    .values(body=garbage)
                )
        yield runtime, client


def _mine(obs_id: str) -> dict[str, Any]:
    return _observation(obs_id, "Patient/p1", status="amended")


# (method, path, body, headers) with {id} for the id tried.
_TRIES: list[tuple[str, str, Callable[[str], Any] | None, dict[str, str]]] = [
    ("GET", "/Observation/{id}", None, {}),
    ("GET", "/Observation/{id}/_history/1", None, {}),
    ("GET", "/Observation/{id}/_history", None, {}),
    ("PUT", "/Observation/{id}", _mine, {}),
    ("PUT", "/Observation/{id}", _mine, {"If-Match": 'W/"1"'}),
    ("DELETE", "/Observation/{id}", None, {}),
    ("DELETE", "/Observation/{id}", None, {"If-Match": 'W/"1"'}),
    ("GET", "/Observation?_id={id}", None, {}),
]


def _bundle(kind: str, resource_id: str) -> dict[str, Any]:
    """A batch reads, updates and deletes the id; a transaction (one entry per resource)
    updates it."""
    url = f"Observation/{resource_id}"
    entries = [
        {"request": {"method": "GET", "url": url}},
        {"resource": _mine(resource_id), "request": {"method": "PUT", "url": url}},
        {"request": {"method": "DELETE", "url": url}},
    ]
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": entries if kind == "batch" else entries[1:2],
    }


async def _answer(
    client: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, str]:
    answer = await client.request(method, path, json=body, headers={**ALICE, **headers})
    assert answer.status_code != 500, answer.text
    text = answer.text
    # Search bundles carry their own random id and timestamp: compare what they hold.
    if answer.headers.get("content-type", "").startswith("application/fhir+json") and text:
        data = answer.json()
        data.pop("id", None)
        data.pop("meta", None)
        for link in data.get("link", []):
            link["url"] = link["url"].split("?")[0]
        text = str(data)
    return answer.status_code, text


@pytest.mark.parametrize(("method", "path", "body", "headers"), _TRIES)
@pytest.mark.parametrize("hidden", [HIDDEN, DELETED])
async def test_another_patients_resource_answers_exactly_as_a_missing_one(
    herald: Herald,
    hidden: str,
    method: str,
    path: str,
    body: Callable[[str], Any] | None,
    headers: dict[str, str],
) -> None:
    runtime, client = herald
    before = await stored_counts(runtime)
    seen = await _answer(client, method, path.format(id=hidden), body and body(hidden), headers)
    missing = await _answer(
        client, method, path.format(id=MISSING), body and body(MISSING), headers
    )
    assert seen[0] == missing[0], (seen, missing)
    assert seen[1].replace(hidden, MISSING) == missing[1]
    assert seen[0] in (200, 404, 412), seen  # 200: an empty search
    assert await stored_counts(runtime) == before  # nothing written, not even the missing one


@pytest.mark.parametrize("kind", ["batch", "transaction"])
@pytest.mark.parametrize("hidden", [HIDDEN, DELETED])
async def test_in_a_bundle_too(herald: Herald, hidden: str, kind: str) -> None:
    runtime, client = herald
    before = await stored_counts(runtime)
    seen = await client.post("", json=_bundle(kind, hidden), headers=ALICE)
    missing = await client.post("", json=_bundle(kind, MISSING), headers=ALICE)
    assert seen.status_code == missing.status_code
    if kind == "batch":
        statuses = [e["response"]["status"] for e in seen.json()["entry"]]
        assert statuses == [e["response"]["status"] for e in missing.json()["entry"]]
        assert statuses[:2] == ["404", "404"]
    else:
        assert seen.status_code == 404
        assert seen.text.replace(hidden, MISSING) == missing.text
    assert await stored_counts(runtime) == before
    answer = await client.get(f"/Observation/{HIDDEN}", headers=ADMIN)
    assert answer.status_code == 200  # still there: the admin reads what was stored


async def test_a_put_that_would_create_needs_the_c_scope(herald: Herald) -> None:
    runtime, client = herald
    no_create = bearer(token(sub="lab", scope="user/Observation.ru"))
    before = await stored_counts(runtime)
    answer = await client.put("/Observation/new1", json=_mine("new1"), headers=no_create)
    assert answer.status_code == 403, answer.text
    assert "Observation.c" in answer.json()["issue"][0]["diagnostics"]
    bundle = _bundle("transaction", "new1")
    assert (await client.post("", json=bundle, headers=no_create)).status_code == 403
    assert await stored_counts(runtime) == before
    # It still updates what exists, and with `c` it creates.
    updated = await client.put("/Observation/ox", json=_mine("ox"), headers=ADMIN)
    assert updated.status_code == 201
    again = await client.put("/Observation/ox", json=_mine("ox"), headers=no_create)
    assert again.status_code == 200, again.text
    full = bearer(token(sub="lab", scope="user/Observation.cru"))
    assert (
        await client.put("/Observation/new1", json=_mine("new1"), headers=full)
    ).status_code == 201


async def test_a_patient_token_without_c_creates_nothing_by_put(herald: Herald) -> None:
    runtime, client = herald
    reader = bearer(token(sub="alice", scope="patient/Observation.ru", patient="p1"))
    before = await stored_counts(runtime)
    answer = await client.put("/Observation/new2", json=_mine("new2"), headers=reader)
    assert answer.status_code == 404
    assert await stored_counts(runtime) == before
