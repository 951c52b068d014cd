"""The FHIR REST interactions as a client sees them, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from fhirstore.db.schema import outbox
from herald.runtime import Runtime


def patient(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
        **extra,
    }


async def outbox_count(runtime: Runtime) -> int:
    async with runtime.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()


async def test_create_read_round_trip(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=patient())
    assert created.status_code == 201
    assert created.headers["content-type"].startswith("application/fhir+json")
    body = created.json()
    assert created.headers["ETag"] == 'W/"1"'
    assert created.headers["Location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert body["meta"]["versionId"] == "1"

    read = await client.get(f"/Patient/{body['id']}")
    assert read.status_code == 200
    assert read.json() == body
    assert read.headers["ETag"] == 'W/"1"'


async def test_update_versions_and_if_match(client: httpx.AsyncClient, runtime: Runtime) -> None:
    pid = (await client.post("/Patient", json=patient())).json()["id"]
    updated = await client.put(
        f"/Patient/{pid}", json=patient(id=pid, gender="other"), headers={"If-Match": 'W/"1"'}
    )
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"

    before = await outbox_count(runtime)
    stale = await client.put(
        f"/Patient/{pid}", json=patient(id=pid, gender="female"), headers={"If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert (await client.get(f"/Patient/{pid}")).json()["gender"] == "other"
    assert await outbox_count(runtime) == before

    old = await client.get(f"/Patient/{pid}/_history/1")
    assert old.status_code == 200 and old.json()["gender"] == "male"


async def test_create_on_update_and_id_mismatch(client: httpx.AsyncClient) -> None:
    made = await client.put("/Patient/chosen-id", json=patient(id="chosen-id"))
    assert made.status_code == 201
    assert made.json()["id"] == "chosen-id"
    mismatch = await client.put("/Patient/chosen-id", json=patient(id="other"))
    assert mismatch.status_code == 400
    assert "does not match" in mismatch.json()["issue"][0]["diagnostics"]


async def test_conditional_create(client: httpx.AsyncClient) -> None:
    ident = {"identifier": [{"system": "urn:mrn", "value": "12345"}]}
    headers = {"If-None-Exist": "identifier=urn:mrn|12345"}
    first = await client.post("/Patient", json=patient(**ident), headers=headers)
    second = await client.post("/Patient", json=patient(**ident), headers=headers)
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    search = await client.get("/Patient", params={"identifier": "urn:mrn|12345"})
    assert len(search.json()["entry"]) == 1


async def test_delete_then_read_is_gone_and_history_tells(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json=patient())).json()["id"]
    await client.put(f"/Patient/{pid}", json=patient(id=pid, active=True))
    deleted = await client.delete(f"/Patient/{pid}")
    assert deleted.status_code == 204
    gone = await client.get(f"/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert (await client.delete(f"/Patient/{pid}")).status_code == 204  # idempotent

    history = (await client.get(f"/Patient/{pid}/_history")).json()
    assert history["type"] == "history"
    assert history["total"] == 3
    methods = [e["request"]["method"] for e in history["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in history["entry"][0]
    assert (await client.get(f"/Patient/{pid}/_history/3")).status_code == 410
    assert (await client.get(f"/Patient/{pid}/_history/9")).status_code == 404

    type_history = (await client.get("/Patient/_history", params={"_count": 2})).json()
    assert len(type_history["entry"]) == 2
    assert any(link["relation"] == "next" for link in type_history["link"])


async def test_missing_resource_and_unknown_type(client: httpx.AsyncClient) -> None:
    missing = await client.get("/Patient/nope")
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"
    unknown = await client.post("/Spaceship", json={"resourceType": "Spaceship"})
    assert unknown.status_code == 404
    assert "Spaceship" in unknown.json()["issue"][0]["diagnostics"]
    assert (await client.get("/Spaceship/1")).status_code == 404


async def test_bad_input_gets_an_outcome_and_stores_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    before = await outbox_count(runtime)
    malformed = await client.post("/Patient", content=b'{"resourceType": "Patient",')
    assert malformed.status_code == 400
    assert "not valid JSON" in malformed.json()["issue"][0]["diagnostics"]

    wrong_type = await client.post(
        "/Patient", content=b"<Patient/>", headers={"Content-Type": "application/xml"}
    )
    assert wrong_type.status_code == 415

    invalid = await client.post("/Patient", json=patient(birthDate="25/12/1974"))
    assert invalid.status_code == 422
    issue = invalid.json()["issue"][0]
    assert issue["expression"] == ["Patient.birthDate"]

    unknown_element = await client.post("/Patient", json=patient(colour="blue"))
    assert unknown_element.status_code == 422
    assert unknown_element.json()["issue"][0]["expression"] == ["Patient.colour"]

    wrong_resource = await client.post("/Patient", json={"resourceType": "Observation"})
    assert wrong_resource.status_code == 400

    too_big = await client.post("/Patient", json=patient(text={"div": "x" * 100_000}))
    assert too_big.status_code == 413
    assert too_big.json()["issue"][0]["code"] == "too-costly"

    assert await outbox_count(runtime) == before
    assert (await client.get("/Patient")).json().get("entry", []) == []


async def test_capability_statement_tells_the_truth(client: httpx.AsyncClient) -> None:
    cap = (await client.get("/metadata")).json()
    assert cap["resourceType"] == "CapabilityStatement"
    assert cap["fhirVersion"] == "4.3.0"
    by_type = {r["type"]: r for r in cap["rest"][0]["resource"]}
    assert "Patient" in by_type and "Observation" in by_type and "Subscription" in by_type
    names = {p["name"] for p in by_type["Observation"]["searchParam"]}
    assert {"code", "subject", "patient", "date", "value-quantity"} <= names
    assert {"code-value-quantity", "component-code-value-quantity"} <= names  # composites
    sequence = {p["name"] for p in by_type["MolecularSequence"]["searchParam"]}
    assert "chromosome-variant-coordinate" not in sequence  # three parts: not supported
    [code] = [p for p in by_type["Observation"]["searchParam"] if p["name"] == "code"]
    assert code["documentation"] == ("Modifiers: :in, :missing, :not, :not-in, :of-type, :text")
    interactions = {i["code"] for i in by_type["Patient"]["interaction"]}
    assert {"read", "vread", "update", "delete", "create", "search-type"} <= interactions


async def test_unknown_route_is_an_outcome(client: httpx.AsyncClient) -> None:
    response = await client.patch("/Patient/1", json={})
    assert response.status_code == 405
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_decimals_keep_their_precision(client: httpx.AsyncClient) -> None:
    raw = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'
        b'"valueQuantity":{"value":0.40,"unit":"mg"},'
        b'"referenceRange":[{"high":{"value":66.899999999999991}}]}'
    )
    created = await client.post("/Observation", content=raw)
    assert created.status_code == 201
    for text in (created.text, (await client.get(f"/Observation/{created.json()['id']}")).text):
        assert '"value":0.40' in text
        assert '"value":66.899999999999991' in text
    found = await client.get("/Observation", params={"value-quantity": "0.4"})
    assert len(found.json()["entry"]) == 1
    assert '"value":0.40' in found.text


async def test_instance_history_since_the_future_is_empty_not_missing(
    client: httpx.AsyncClient,
) -> None:
    pid = (await client.post("/Patient", json=patient())).json()["id"]
    later = await client.get(f"/Patient/{pid}/_history", params={"_since": "2999-01-01T00:00:00Z"})
    assert later.status_code == 200
    assert later.json()["total"] == 0
    assert (await client.get("/Patient/never/_history")).status_code == 404
