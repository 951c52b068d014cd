"""Composite parameters, UCUM quantities, `:of-type` and `:in` through the REST API, on both
databases: resources written through Herald are indexed for them at once."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fhirstore.search.terms_corpus import VS, observations, patients, value_sets

WANTED = {"bp-1", "bp-2", "bp-3", "mass-ug", "mass-5"}


async def _put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    path = f"/{resource['resourceType']}/{resource['id']}"
    response = await client.put(path, json=resource)
    assert response.status_code in (200, 201), response.text


async def _ids(client: httpx.AsyncClient, path: str) -> list[str]:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return sorted(entry["resource"]["id"] for entry in response.json().get("entry", []))


async def test_new_search_kinds_through_the_api(client: httpx.AsyncClient) -> None:
    stored = [o for o in observations() if o["id"] in WANTED] + patients()[:2] + value_sets()
    for resource in stored:
        await _put(client, resource)
    assert await _ids(client, "/Observation?component-code-value-quantity=8462-4$gt90") == ["bp-2"]
    ucum = "/Observation?value-quantity=gt5.4|http://unitsofmeasure.org|mg"
    assert await _ids(client, ucum) == ["mass-ug"]
    assert await _ids(client, f"/Observation?code:in={VS}/pressure") == ["bp-1", "bp-2", "bp-3"]
    assert await _ids(client, "/Observation?code:not-in=ValueSet/pressure") == [
        "mass-5",
        "mass-ug",
    ]
    typed = "/Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|DL|12345"
    assert await _ids(client, typed) == ["p-2"]

    refused = await client.get(f"/Observation?code:in={VS}/is-a")
    assert refused.status_code == 400
    issue = refused.json()["issue"][0]
    assert f"ValueSet '{VS}/is-a'" in issue["diagnostics"]
    assert "needs a terminology server" in issue["diagnostics"]
    assert issue["expression"] == ["code:in"]
