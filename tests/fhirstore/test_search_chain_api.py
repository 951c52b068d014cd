"""Chained parameters and `_has` over the REST API, on both databases: searches, POST _search,
conditional creates (REST and in a transaction), the 400s, and the CapabilityStatement."""

from __future__ import annotations

from typing import Any

import httpx

LOINC = "http://loinc.org"
MRN = "http://hospital.example.org/mrn"


def _observation(subject: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
    }


async def _seed(client: httpx.AsyncClient) -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "A-1"}]}
    for resource in (
        {**patient, "id": "ann", "name": [{"family": "Lind"}]},
        {"resourceType": "Patient", "id": "bo", "name": [{"family": "Berg"}]},
    ):
        assert (await client.put(f"/Patient/{resource['id']}", json=resource)).status_code == 201
    for subject, code in (("Patient/ann", "8867-4"), ("Patient/bo", "2339-0")):
        assert (await client.post("/Observation", json=_observation(subject, code))).is_success


def _subjects(bundle: dict[str, Any]) -> list[str]:
    found = [entry["resource"] for entry in bundle.get("entry", [])]
    return sorted(r["subject"]["reference"] if "subject" in r else r["id"] for r in found)


async def test_chained_searches_over_get_and_post(client: httpx.AsyncClient) -> None:
    await _seed(client)
    by_mrn = await client.get("/Observation", params={"patient.identifier": f"{MRN}|A-1"})
    assert by_mrn.status_code == 200
    assert _subjects(by_mrn.json()) == ["Patient/ann"]
    posted = await client.post(
        "/Patient/_search",
        content=f"_has:Observation:patient:code={LOINC}|2339-0".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200
    assert _subjects(posted.json()) == ["bo"]
    # The self link keeps the chained parameter as asked.
    self_link = posted.json()["link"][0]["url"]
    assert (
        "/Patient?_has%3AObservation%3Apatient%3Acode=http%3A%2F%2Floinc.org%7C2339-0" in self_link
    )


async def test_a_wrong_chain_is_a_400_naming_the_parameter(client: httpx.AsyncClient) -> None:
    answer = await client.get("/Observation", params={"subject.name": "x"})
    assert answer.status_code == 400
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["subject.name"]
    assert "name one: subject:Location.name" in issue["diagnostics"]
    deep = "_has:Observation:patient:" * 4 + "code"
    too_deep = await client.get("/Patient", params={deep: "1"})
    assert too_deep.status_code == 400
    assert too_deep.json()["issue"][0]["code"] == "too-costly"
    assert "HERALD_SEARCH_MAX_CHAIN_DEPTH" in too_deep.json()["issue"][0]["diagnostics"]


async def test_a_conditional_create_may_use_a_chain(client: httpx.AsyncClient) -> None:
    await _seed(client)
    condition = {"If-None-Exist": "patient.name=lind&code=8867-4"}
    again = await client.post(
        "/Observation", json=_observation("Patient/ann", "8867-4"), headers=condition
    )
    assert again.status_code == 200  # found, not created
    new = {"If-None-Exist": "patient.name=berg&code=8867-4"}
    created = await client.post(
        "/Observation", json=_observation("Patient/bo", "8867-4"), headers=new
    )
    assert created.status_code == 201
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _observation("Patient/bo", "2339-0"),
                "request": {
                    "method": "POST",
                    "url": "Observation",
                    "ifNoneExist": "_has:Observation:patient:code=x&_id=none",
                },
            },
            {
                "resource": _observation("Patient/ann", "8867-4"),
                "request": {
                    "method": "POST",
                    "url": "Observation",
                    "ifNoneExist": "subject:Patient.identifier=A-1&code=8867-4",
                },
            },
        ],
    }
    answer = await client.post("/", json=bundle)
    assert answer.status_code == 400  # `_has` on Observation through its own patient: wrong
    assert "Observation's patient never points at Observation" in answer.text
    bundle["entry"] = bundle["entry"][1:]
    answer = await client.post("/", json=bundle)
    assert answer.status_code == 200, answer.text
    assert answer.json()["entry"][0]["response"]["status"].startswith("200")
    count = await client.get("/Observation", params={"_summary": "count", "_total": "accurate"})
    assert count.json()["total"] == 3


async def test_the_capability_statement_says_chains_are_supported(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/metadata")).json()
    rest = statement["rest"][0]
    assert {"name": "_has", "type": "special"}.items() <= next(
        p for p in rest["searchParam"] if p["name"] == "_has"
    ).items()
    observation = next(r for r in rest["resource"] if r["type"] == "Observation")
    assert "Chained search" in observation["documentation"]
    assert "HERALD_SEARCH_MAX_CHAIN_DEPTH" in observation["documentation"]
