"""Transaction (all-or-nothing, urn:uuid rewriting) and batch Bundles."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from fhirstore.db.schema import outbox, resources
from herald.runtime import Runtime
from tests.support.herald import crash_writes_of_gender


def _transaction(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


PATIENT_ENTRY = {
    "fullUrl": "urn:uuid:3f0f5e1c-6a40-4c36-9c19-5e2b9f0b9a11",
    "resource": {"resourceType": "Patient", "name": [{"family": "Nguyen"}]},
    "request": {"method": "POST", "url": "Patient"},
}


def _observation_entry(subject: str) -> dict:
    return {
        "fullUrl": "urn:uuid:0b6f3a53-7c2c-4a3e-8d1d-1b9c2c7d6e01",
        "resource": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "weight"},
            "subject": {"reference": subject},
        },
        "request": {"method": "POST", "url": "Observation"},
    }


async def _count(runtime: Runtime, table) -> int:
    async with runtime.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def test_transaction_rewrites_urn_uuid_references(client: httpx.AsyncClient) -> None:
    bundle = _transaction(PATIENT_ENTRY, _observation_entry(PATIENT_ENTRY["fullUrl"]))
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    patient_location = result["entry"][0]["response"]["location"]
    patient_ref = "/".join(patient_location.split("/")[:2])
    obs_location = result["entry"][1]["response"]["location"]
    observation = (await client.get("/" + "/".join(obs_location.split("/")[:2]))).json()
    assert observation["subject"]["reference"] == patient_ref

    found = (await client.get("/Observation", params={"subject": patient_ref})).json()
    assert len(found["entry"]) == 1


async def test_transaction_is_all_or_nothing(client: httpx.AsyncClient, runtime: Runtime) -> None:
    broken = _observation_entry("Patient/x")
    broken["resource"]["status"] = 42
    before = (await _count(runtime, resources), await _count(runtime, outbox))
    response = await client.post("", json=_transaction(PATIENT_ENTRY, broken))
    assert response.status_code == 422
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (await _count(runtime, resources), await _count(runtime, outbox)) == before

    stale = {
        "resource": {"resourceType": "Patient", "id": "p1"},
        "request": {"method": "PUT", "url": "Patient/p1", "ifMatch": 'W/"7"'},
    }
    response = await client.post("", json=_transaction(PATIENT_ENTRY, stale))
    assert response.status_code == 412
    assert (await _count(runtime, resources), await _count(runtime, outbox)) == before


async def test_batch_reports_each_entry(client: httpx.AsyncClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Patient", "gender": 7},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
        ],
    }
    response = await client.post("", json=bundle)
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1] == "422"
    assert statuses[2] == "404"


async def test_base_post_needs_a_batch_or_transaction(client: httpx.AsyncClient) -> None:
    response = await client.post("", json={"resourceType": "Bundle", "type": "collection"})
    assert response.status_code == 400


async def test_batch_entry_that_crashes_is_500_and_the_others_stand(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_writes_of_gender(runtime, monkeypatch)

    def post(gender: str) -> dict:
        resource = {"resourceType": "Patient", "gender": gender}
        return {"resource": resource, "request": {"method": "POST", "url": "Patient"}}

    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [post("male"), post("unknown")]}
    bundle["entry"].append(post("female"))
    before = await _count(runtime, outbox)
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text
    first, crashed, last = (e["response"] for e in response.json()["entry"])
    assert (first["status"], last["status"]) == ("201 Created", "201 Created")
    assert crashed["status"] == "500"
    issue = crashed["outcome"]["issue"][0]
    assert issue["code"] == "exception"
    assert issue["expression"] == ["Bundle.entry[1]"]
    assert await _count(runtime, outbox) == before + 2
    for gender, expected in (("male", 1), ("unknown", 0), ("female", 1)):
        found = (await client.get("/Patient", params={"gender": gender})).json()
        assert len(found.get("entry", [])) == expected
