"""`_include:iterate` and `_revinclude:iterate` through the access boundary, with real signed
tokens on both databases: however far an iteration goes, a patient's token never brings in
another patient's resources, nor reaches anything through them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fhirstore.access.test_boundary import ADMIN, ALICE, NURSE, _observation
from tests.support.tokens import seeded_api


def _patient(res_id: str, family: str, *links: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": res_id,
        "name": [{"family": family}],
    }
    if links:
        resource["link"] = [
            {"other": {"reference": f"Patient/{o}"}, "type": "seealso"} for o in links
        ]
    return resource


SEED: list[dict[str, Any]] = [
    # Alice's record links to Bob's, and Bob's to a third patient's.
    _patient("p1", "Alvarez", "p2"),
    _patient("p2", "Brennan", "p3"),
    _patient("p3", "Castillo"),
    _observation("o1", "Patient/p1"),
    # Alice's, with Bob as a performer: the way out of her compartment, one step away.
    _observation("o3", "Patient/p1", performer=[{"reference": "Patient/p2"}]),
    _observation("o2", "Patient/p2"),  # Bob's
    _observation("o5", "Patient/p3"),  # the third patient's
    # Bob's, about Alice (focus is not a compartment parameter): points at her, is not hers.
    _observation("o4", "Patient/p2", focus=[{"reference": "Patient/p1"}]),
]


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """On both databases: the includes are narrowed in SQL."""
    async with seeded_api(database_url, tmp_path, SEED, ADMIN) as client:
        yield client


def _ids(bundle: dict[str, Any], mode: str) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == mode
    }


QUERIES = [
    # Observations, their subjects and performers, what points at those, and on.
    "/Observation?_include:iterate=Observation:subject&_include:iterate=Observation:performer"
    "&_revinclude:iterate=Observation:subject&_revinclude:iterate=Observation:focus"
    "&_include:iterate=Patient:link",
    # From the patients: their links, what points at them, what that points at, and on.
    "/Patient?_include:iterate=Patient:link&_revinclude:iterate=Observation:subject"
    "&_revinclude:iterate=Observation:focus&_include:iterate=Observation:performer",
]


@pytest.mark.parametrize("query", QUERIES)
async def test_an_iteration_never_brings_in_another_patients_resources(
    client: httpx.AsyncClient, query: str
) -> None:
    answer = await client.get(query, headers=ALICE)
    assert answer.status_code == 200, answer.text
    bundle = answer.json()

    everything = _ids(bundle, "match") | _ids(bundle, "include")
    assert everything <= {"Patient/p1", "Observation/o1", "Observation/o3"}
    assert "Brennan" not in answer.text and "Castillo" not in answer.text

    # The same search by a user token that may read every patient goes all the way.
    nurse = (await client.get(query, headers=NURSE)).json()
    reached = _ids(nurse, "match") | _ids(nurse, "include")
    assert {
        "Patient/p2",
        "Patient/p3",
        "Observation/o2",
        "Observation/o4",
        "Observation/o5",
    } <= reached


async def test_an_iteration_does_not_pass_through_a_resource_out_of_reach(
    client: httpx.AsyncClient,
) -> None:
    # p1 -> p2 -> p3: Alice may read p1 only; p3 lies beyond p2, which she may not read.
    query = "/Patient?_id=p1&_include:iterate=Patient:link&_revinclude:iterate=Observation:subject"
    alice = (await client.get(query, headers=ALICE)).json()
    assert _ids(alice, "include") == {"Observation/o1", "Observation/o3"}
    nurse = (await client.get(query, headers=NURSE)).json()
    assert _ids(nurse, "include") == {
        "Patient/p2",
        "Patient/p3",
        "Observation/o1",
        "Observation/o3",
        "Observation/o2",
        "Observation/o4",
        "Observation/o5",
    }
