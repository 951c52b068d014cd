"""Chains and `_has` through the access boundary, on both databases, with real signed tokens:
every resource a link passes through must be one the token may read, so a chain never tells a
patient's app anything about another patient (or a type it may not read). Each refusal is
checked against an administrator's answer to the same search, which does find something."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fhirstore.access.test_boundary import ADMIN, ALICE, _observation
from tests.support.tokens import bearer, seeded_api, token

LOINC = "http://loinc.org"
# Alice's app, allowed her Observations but not her Patient record.
OBSERVATIONS_ONLY = bearer(
    token(sub="alice-obs", scope="openid launch/patient patient/Observation.rs", patient="p1")
)


def _coded(obs_id: str, subject: str, code: str, **more: Any) -> dict[str, Any]:
    return _observation(obs_id, subject, code={"coding": [{"system": LOINC, "code": code}]}, **more)


SEED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Alvarez"}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Brennan"}], "gender": "male"},
    _coded("mine", "Patient/p1", "1000-1"),
    _coded("bobs", "Patient/p2", "9999-9"),  # a code only Bob has
    # Alice's, naming Bob as performer: in her compartment, Bob himself is not.
    _coded("shared", "Patient/p1", "1000-1", performer=[{"reference": "Patient/p2"}]),
    # Bob's, about Alice (focus is no compartment parameter): outside her compartment.
    _coded("about-alice", "Patient/p2", "7777-7", focus=[{"reference": "Patient/p1"}]),
]


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with seeded_api(database_url, tmp_path, SEED, ADMIN) as client:
        yield client


async def _found(client: httpx.AsyncClient, query: str, headers: dict[str, str]) -> list[str]:
    answer = await client.get(f"{query}&_total=accurate", headers=headers)
    assert answer.status_code == 200, answer.text
    bundle = answer.json()
    found = sorted(entry["resource"]["id"] for entry in bundle.get("entry", []))
    assert bundle["total"] == len(found)
    return found


@pytest.mark.parametrize(
    ("query", "administrator_finds"),
    [
        # Another patient's name, through the reference to him.
        ("/Observation?performer:Patient.name=brennan", ["shared"]),
        ("/Observation?patient.name=brennan", ["bobs", "about-alice"]),
        ("/Observation?performer:Patient.gender=male", ["shared"]),
        # A code only the other patient has.
        ("/Patient?_has:Observation:patient:code=9999-9", ["p2"]),
        # From Alice, through an Observation of Bob's compartment that points at her.
        ("/Patient?_has:Observation:focus:code=7777-7", ["p1"]),
        ("/Patient?_has:Observation:focus:_id=about-alice", ["p1"]),
        # Two links, the second through Bob.
        ("/Observation?performer:Patient._has:Observation:patient:code=9999-9", ["shared"]),
        # The modifiers that find what is *not* there must not see through the boundary.
        ("/Observation?performer:Patient.name:missing=false", ["shared"]),
        ("/Observation?performer:Patient.gender:not=female", ["shared"]),
    ],
)
async def test_a_chain_never_passes_through_another_patient(
    client: httpx.AsyncClient, query: str, administrator_finds: list[str]
) -> None:
    assert await _found(client, query, ADMIN) == sorted(administrator_finds)
    assert await _found(client, query, ALICE) == []


async def test_a_chain_inside_the_compartment_still_works(client: httpx.AsyncClient) -> None:
    assert await _found(client, "/Observation?patient.name=alvarez", ALICE) == ["mine", "shared"]
    assert await _found(client, "/Patient?_has:Observation:patient:code=1000-1", ALICE) == ["p1"]
    assert await _found(client, "/Patient?_has:Observation:performer:code=1000-1", ALICE) == []


async def test_a_chain_through_a_type_the_token_may_not_read_finds_nothing(
    client: httpx.AsyncClient,
) -> None:
    query = "/Observation?patient.name=alvarez"
    assert await _found(client, query, OBSERVATIONS_ONLY) == []
    assert await _found(client, "/Observation?patient=p1", OBSERVATIONS_ONLY) == [
        "mine",
        "shared",
    ]


async def test_a_batch_entry_is_narrowed_the_same_way(client: httpx.AsyncClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient?_has:Observation:patient:code=9999-9"}},
            {"request": {"method": "GET", "url": "Observation?patient.name=alvarez"}},
        ],
    }
    answer = await client.post("/", json=bundle, headers=ALICE)
    assert answer.status_code == 200, answer.text
    results = [entry["resource"] for entry in answer.json()["entry"]]
    found = [sorted(e["resource"]["id"] for e in r.get("entry", [])) for r in results]
    assert found == [[], ["mine", "shared"]]
