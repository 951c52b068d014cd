"""Conditional creates (ifNoneExist / If-None-Exist): in transactions, and under concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from herald.runtime import Runtime
from tests.support.herald import stored_counts

MRN = {"system": "urn:mrn", "value": "4711"}
CONDITION = "identifier=urn:mrn|4711"
PATIENT_URL = "urn:uuid:7a0c4a46-0a3b-4a4e-9f53-9f6f2d9c0a01"


def _patient_entry(condition: str | None = CONDITION) -> dict[str, Any]:
    request = {"method": "POST", "url": "Patient"}
    if condition is not None:
        request["ifNoneExist"] = condition
    return {
        "fullUrl": PATIENT_URL,
        "resource": {"resourceType": "Patient", "identifier": [MRN], "gender": "female"},
        "request": request,
    }


def _observation_entry() -> dict[str, Any]:
    return {
        "fullUrl": "urn:uuid:7a0c4a46-0a3b-4a4e-9f53-9f6f2d9c0a02",
        "resource": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "weight"},
            "subject": {"reference": PATIENT_URL},
        },
        "request": {"method": "POST", "url": "Observation"},
    }


def _transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


async def _patients(client: httpx.AsyncClient) -> list[str]:
    found = (await client.get("/Patient", params={"identifier": "urn:mrn|4711"})).json()
    return [e["resource"]["id"] for e in found.get("entry", [])]


async def _subject(client: httpx.AsyncClient, location: str) -> str:
    observation = (await client.get("/" + "/".join(location.split("/")[:2]))).json()
    return observation["subject"]["reference"]


async def test_references_follow_a_matched_condition_to_the_existing_resource(
    client: httpx.AsyncClient,
) -> None:
    existing = (await client.post("/Patient", json=_patient_entry()["resource"])).json()["id"]

    response = await client.post("", json=_transaction(_patient_entry(), _observation_entry()))
    assert response.status_code == 200, response.text
    patient, observation = (e["response"] for e in response.json()["entry"])
    assert patient["status"] == "200 OK"
    assert patient["location"] == f"Patient/{existing}/_history/1"
    assert observation["status"] == "201 Created"
    assert await _subject(client, observation["location"]) == f"Patient/{existing}"
    assert await _patients(client) == [existing]


async def test_unmatched_condition_creates_and_references_the_new_resource(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("", json=_transaction(_patient_entry(), _observation_entry()))
    assert response.status_code == 200, response.text
    patient, observation = (e["response"] for e in response.json()["entry"])
    assert patient["status"] == "201 Created"
    created = "/".join(patient["location"].split("/")[:2])
    assert await _subject(client, observation["location"]) == created
    assert await _patients(client) == [created.split("/")[1]]


async def test_condition_matching_several_is_412_and_stores_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for _ in range(2):
        await client.post("/Patient", json=_patient_entry()["resource"])
    before = await stored_counts(runtime)
    response = await client.post("", json=_transaction(_patient_entry(), _observation_entry()))
    assert response.status_code == 412, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[0].request.ifNoneExist"]
    assert await stored_counts(runtime) == before


async def test_concurrent_conditional_transactions_create_one(client: httpx.AsyncClient) -> None:
    bundle = _transaction(_patient_entry(), _observation_entry())
    responses = await asyncio.gather(*(client.post("", json=bundle) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    [patient] = await _patients(client)
    statuses = sorted(r.json()["entry"][0]["response"]["status"] for r in responses)
    assert statuses == ["200 OK"] * 7 + ["201 Created"]
    for response in responses:
        location = response.json()["entry"][1]["response"]["location"]
        assert await _subject(client, location) == f"Patient/{patient}"


async def test_concurrent_conditional_rest_creates_create_one(client: httpx.AsyncClient) -> None:
    body = _patient_entry()["resource"]
    headers = {"If-None-Exist": CONDITION}
    responses = await asyncio.gather(
        *(client.post("/Patient", json=body, headers=headers) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    [patient] = await _patients(client)
    assert {r.json()["id"] for r in responses} == {patient}


async def test_concurrent_conditional_bundles_and_rest_creates_create_one(
    client: httpx.AsyncClient,
) -> None:
    bundle = _transaction(_patient_entry(), _observation_entry())
    rest = _patient_entry()["resource"]
    responses = await asyncio.gather(
        *(client.post("", json=bundle) for _ in range(4)),
        *(
            client.post("/Patient", json=rest, headers={"If-None-Exist": CONDITION})
            for _ in range(4)
        ),
    )
    assert [r.status_code for r in responses[:4]] == [200] * 4
    assert {r.status_code for r in responses[4:]} <= {200, 201}
    [patient] = await _patients(client)
    assert {r.json()["id"] for r in responses[4:]} == {patient}


def _mrn_entry(value: str, *, system: str | None = "urn:mrn") -> dict[str, Any]:
    identifier = {"value": value} if system is None else {"system": system, "value": value}
    condition = f"identifier={value}" if system is None else f"identifier={system}|{value}"
    return {
        "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{int(value):012d}",
        "resource": {"resourceType": "Patient", "identifier": [identifier]},
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition},
    }


async def test_many_identifier_conditions_in_one_bundle_each_match_their_own(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A Bundle of 120 conditional creates on identifiers (answered a chunk at a time, by one
    search each) matches each against its own identifier only: a stored one by its exact
    system and value, not another system's or a value that merely starts the same."""
    stored = {}
    for value in ("7", "70", "119"):
        created = await client.post("/Patient", json=_mrn_entry(value)["resource"])
        stored[value] = created.json()["id"]
    other = {"resourceType": "Patient", "identifier": [{"system": "urn:other", "value": "8"}]}
    assert (await client.post("/Patient", json=other)).status_code == 201
    entries = [_mrn_entry(str(i)) for i in range(120)]
    entries[9] = _mrn_entry("9", system=None)  # any system
    before = (await stored_counts(runtime))[0]
    response = await client.post("", json=_transaction(*entries))
    assert response.status_code == 200, response.text
    answers = response.json()["entry"]
    statuses = [a["response"]["status"] for a in answers]
    assert [i for i, s in enumerate(statuses) if s.startswith("200")] == [7, 70, 119]
    assert all(s.startswith("201") for i, s in enumerate(statuses) if i not in (7, 70, 119))
    for value, patient_id in stored.items():
        assert answers[int(value)]["response"]["location"].startswith(f"Patient/{patient_id}/")
    assert (await stored_counts(runtime))[0] == before + 117


async def test_an_identifier_condition_matching_several_among_many_is_412(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for _ in range(2):
        assert (await client.post("/Patient", json=_mrn_entry("5")["resource"])).status_code == 201
    before = await stored_counts(runtime)
    entries = [_mrn_entry(str(i)) for i in range(10)]
    response = await client.post("", json=_transaction(*entries))
    assert response.status_code == 412, response.text
    assert "Bundle.entry[5].request.ifNoneExist matches more than one" in response.text
    assert await stored_counts(runtime) == before
