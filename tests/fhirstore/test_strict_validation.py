"""Invalid FHIR is refused with 422 naming the element, and nothing is stored (issue 20).

A hostile client's attempts: primitives of the wrong JSON type, codes outside a required binding,
script in the narrative, the same inside contained resources and Bundles, and characters no
database can store. Every test runs on SQLite and PostgreSQL (see conftest).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from herald.runtime import Runtime
from tests.support.herald import stored_counts

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


def _issue(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


def _narrative(inner: str) -> dict[str, Any]:
    return {"status": "generated", "div": f"<div {XHTML}>{inner}</div>"}


# (what the client sends in a Patient, the element the 422 names, words the message has)
HOSTILE_PATIENTS = [
    ({"active": "yes"}, "Patient.active", "true or false"),
    ({"active": 1}, "Patient.active", "true or false"),
    ({"gender": "attack"}, "Patient.gender", "female, male, other, unknown"),
    ({"gender": "male "}, "Patient.gender", "not a valid FHIR code"),
    ({"multipleBirthInteger": "3"}, "Patient.multipleBirthInteger", "without a fraction"),
    ({"multipleBirthInteger": 2.5}, "Patient.multipleBirthInteger", "without a fraction"),
    ({"multipleBirthInteger": 2**31}, "Patient.multipleBirthInteger", "out of range"),
    ({"birthDate": "1 Jan 1970"}, "Patient.birthDate", "not a valid FHIR date"),
    ({"birthDate": ""}, "Patient.birthDate", "empty string"),
    ({"name": [{"family": ""}]}, "Patient.name[0].family", "empty string"),
    ({"name": {"family": "Okafor"}}, "Patient.name", "must be an array"),
    ({"name": []}, "Patient.name", "empty array"),
    (
        {"managingOrganization": [{"reference": "Organization/1"}]},
        "Patient.managingOrganization",
        "not an array",
    ),
    ({"active": None}, "Patient.active", "null"),
    ({"text": _narrative("<script>alert(1)</script>hi")}, "Patient.text.div", "<script>"),
    ({"text": _narrative('<p onclick="steal()">hi</p>')}, "Patient.text.div", "onclick"),
    (
        {"text": _narrative('<a href=" javascript:steal()">hi</a>')},
        "Patient.text.div",
        "scripting URL",
    ),
    (
        {"text": _narrative('<iframe src="https://evil.example/"/>x')},
        "Patient.text.div",
        "<iframe>",
    ),
    ({"text": _narrative("   ")}, "Patient.text.div", "txt-2"),
    (
        {"text": {"status": "generated", "div": "<div>no namespace</div>"}},
        "Patient.text.div",
        "xhtml",
    ),
    ({"text": _narrative("<p>unclosed")}, "Patient.text.div", "well-formed"),
    (
        {
            "text": {
                "status": "generated",
                "div": (
                    '<!DOCTYPE div [<!ENTITY a "aaaaaaaaaa">'
                    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
                    f"<div {XHTML}>&b;</div>"
                ),
            }
        },
        "Patient.text.div",
        "DTD",
    ),
    ({"name": [{"family": "Oka\u0000for"}]}, "Patient.name[0].family", "NUL"),
    (
        {"identifier": [{"system": "urn:x", "value": "\u0000"}]},
        "Patient.identifier[0].value",
        "NUL",
    ),
]


@pytest.mark.parametrize(("fields", "element", "words"), HOSTILE_PATIENTS)
async def test_invalid_patient_is_422_naming_the_element_and_nothing_is_stored(
    client: httpx.AsyncClient, runtime: Runtime, fields: dict[str, Any], element: str, words: str
) -> None:
    before = await stored_counts(runtime)
    body = {"resourceType": "Patient", **fields}
    for response in (
        await client.post("/Patient", json=body),
        await client.put("/Patient/hostile", json={**body, "id": "hostile"}),
    ):
        issue = _issue(response)
        assert issue["expression"] == [element]
        assert words.lower() in issue["diagnostics"].lower()
    assert await stored_counts(runtime) == before
    assert (await client.get("/Patient/hostile")).status_code == 404
    assert (await client.get("/metadata")).status_code == 200  # still answering


async def test_valid_primitives_extensions_and_narrative_are_still_accepted(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "resourceType": "Patient",
        "active": False,
        "gender": "female",
        "multipleBirthInteger": 2,
        "birthDate": "1970-01",
        "name": [{"family": "Ọkàfọ̀r", "given": ["Ada", None]}],
        "_gender": {"extension": [{"url": "http://example.org/x", "valueString": "self"}]},
        "text": _narrative(
            '<p style="color: red" class="x">Ada &amp; <b>co</b></p>'
            '<a href="https://example.org/">link</a><img src="data:image/png;base64,AAAA" alt=""/>'
        ),
    }
    body["name"][0]["_given"] = [None, {"extension": [{"url": "urn:x", "valueCode": "SP"}]}]
    created = await client.post("/Patient", json=body)
    assert created.status_code == 201, created.text
    read = (await client.get(f"/Patient/{created.json()['id']}")).json()
    assert read["name"] == body["name"] and read["text"] == body["text"]


async def test_contained_resources_follow_the_same_rules(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    before = await stored_counts(runtime)
    contained = [
        {"resourceType": "Organization", "id": "org", "active": True},
        {"resourceType": "Patient", "id": "p", "gender": "attack"},
    ]
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "contained": contained,
    }
    issue = _issue(await client.post("/Observation", json=body))
    assert issue["expression"] == ["Observation.contained[1].gender"]
    body["contained"][1] = {
        "resourceType": "Patient",
        "id": "p",
        "text": _narrative("<script>x</script>"),
    }
    issue = _issue(await client.post("/Observation", json=body))
    assert issue["expression"] == ["Observation.contained[1].text.div"]
    body["contained"][1] = {"resourceType": "Patient.contact", "id": "p"}  # crashed the models
    issue = _issue(await client.post("/Observation", json=body))
    assert issue["expression"] == ["Observation.contained[1].resourceType"]
    body["status"] = "attack"
    issue = _issue(await client.post("/Observation", json=body))
    assert "Observation.status" in issue["expression"]
    assert await stored_counts(runtime) == before


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


async def test_transaction_names_the_entry_that_failed_and_stores_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    before = await stored_counts(runtime)
    good = {"resourceType": "Patient", "name": [{"family": "Okafor"}]}
    bad = {"resourceType": "Patient", "gender": "attack"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [_entry(good), _entry(good), _entry(good), _entry(bad)],
    }
    issue = _issue(await client.post("", json=bundle))
    assert issue["expression"] == ["Bundle.entry[3].resource.gender"]
    assert "Bundle.entry[3].resource.gender" in issue["diagnostics"]
    bundle["entry"][3] = _entry({"resourceType": "Patient", "active": "yes"})
    issue = _issue(await client.post("", json=bundle))
    assert issue["expression"] == ["Bundle.entry[3].resource.active"]
    assert await stored_counts(runtime) == before


async def test_batch_refuses_only_the_invalid_entry(client: httpx.AsyncClient) -> None:
    good = {"resourceType": "Patient", "name": [{"family": "Okafor"}]}
    bad = {"resourceType": "Patient", "multipleBirthInteger": "3"}
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [_entry(good), _entry(bad)]}
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text
    first, second = (e["response"] for e in response.json()["entry"])
    assert first["status"].startswith("201")
    assert second["status"] == "422"
    issue = second["outcome"]["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.multipleBirthInteger"]


async def test_stored_collection_bundle_checks_its_entries(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    before = await stored_counts(runtime)
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:5b0b0b3e-1e8f-4a57-9f7e-3e0d3a4b1c2d",
                "resource": {
                    "resourceType": "Patient",
                    "text": _narrative('<img src="x" onerror="steal()"/>'),
                },
            }
        ],
    }
    issue = _issue(await client.post("/Bundle", json=bundle))
    assert issue["expression"] == ["Bundle.entry[0].resource.text.div"]
    assert await stored_counts(runtime) == before


# -- characters no database can store --------------------------------------------------------


async def test_nul_anywhere_in_the_body_is_refused_on_both_databases(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """On PostgreSQL a NUL in an indexed string used to make the write fail with 500."""
    before = await stored_counts(runtime)
    bodies = [
        ({"resourceType": "Patient", "name": [{"family": "a\u0000b"}]}, "Patient.name[0].family"),
        ({"resourceType": "Patient", "unknownElement": ["\u0000"]}, "Patient.unknownElement"),
        ({"resourceType": "Patient", "na\u0000me": []}, "Patient"),
        ({"resourceType": "Patient", "id": "a\u0000"}, "Patient.id"),
    ]
    for body, element in bodies:
        issue = _issue(await client.post("/Patient", json=body))
        assert issue["expression"] == [element]
    assert await stored_counts(runtime) == before


async def test_lone_surrogates_are_refused(client: httpx.AsyncClient, runtime: Runtime) -> None:
    before = await stored_counts(runtime)
    headers = {"Content-Type": "application/fhir+json"}
    for text in (
        b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}',
        b'{"resourceType":"Patient","multipleBirthInteger":1.5,"name":[{"family":"\\udfff"}]}',
    ):
        response = await client.post("/Patient", content=text, headers=headers)
        assert response.status_code in (400, 422), response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    assert await stored_counts(runtime) == before


async def test_nul_in_the_url_id_is_400_on_every_interaction(client: httpx.AsyncClient) -> None:
    """Ids never reach the database unchecked (PostgreSQL cannot compare a NUL: it gave 500)."""
    body = {"resourceType": "Patient", "id": "a\u0000b"}
    for response in (
        await client.put("/Patient/a%00b", json=body),
        await client.get("/Patient/a%00b"),
        await client.get("/Patient/a%00b/_history"),
        await client.get("/Patient/a%00b/_history/1"),
        await client.delete("/Patient/a%00b"),
        await client.put("/Patient/a%0A", json={"resourceType": "Patient", "id": "a\n"}),
        await client.get("/Patient/a%0A"),
    ):
        assert "invalid id" in _issue(response, 400)["diagnostics"]


async def test_nul_writes_do_not_fail_other_clients_concurrent_writes(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Refused at the edge, a NUL never reaches a group-committed batch."""
    before = await stored_counts(runtime)
    good = {"resourceType": "Patient", "name": [{"family": "Okafor"}]}
    bad = {"resourceType": "Patient", "name": [{"family": "Oka\u0000for"}]}
    bodies = [good if i % 4 else bad for i in range(40)]
    responses = await asyncio.wait_for(
        asyncio.gather(*(client.post("/Patient", json=b) for b in bodies)), timeout=60
    )
    statuses = [r.status_code for r in responses]
    assert statuses == [201 if i % 4 else 422 for i in range(40)]
    assert await stored_counts(runtime) == (before[0] + 30, before[1] + 30)
