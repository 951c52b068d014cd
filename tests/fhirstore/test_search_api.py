"""Search through the HTTP API: parameters, paging links, includes and errors."""

from __future__ import annotations

import httpx


async def _observation(client: httpx.AsyncClient, pid: str, code: str, value: float) -> str:
    response = await client.post(
        "/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2024-03-01T10:00:00Z",
            "valueQuantity": {
                "value": value,
                "unit": "mmHg",
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
            },
        },
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def test_search_filters_pages_and_includes(client: httpx.AsyncClient) -> None:
    pid = (
        await client.post(
            "/Patient", json={"resourceType": "Patient", "name": [{"family": "Ávila"}]}
        )
    ).json()["id"]
    for value in (110, 120, 130, 140, 150):
        await _observation(client, pid, "8480-6", value)
    await _observation(client, pid, "8462-4", 80)

    systolic = (await client.get("/Observation", params={"code": "http://loinc.org|8480-6"})).json()
    assert systolic["type"] == "searchset"
    assert len(systolic["entry"]) == 5

    high = await client.get(
        "/Observation", params={"code": "8480-6", "value-quantity": "gt125", "_total": "accurate"}
    )
    assert high.json()["total"] == 3

    page = (
        await client.get("/Observation", params={"subject": f"Patient/{pid}", "_count": 4})
    ).json()
    assert len(page["entry"]) == 4
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    rest = (await client.get(next_url)).json()
    assert len(rest["entry"]) == 2
    seen = {e["resource"]["id"] for e in page["entry"] + rest["entry"]}
    assert len(seen) == 6

    with_patient = (
        await client.get(
            "/Observation", params={"code": "8462-4", "_include": "Observation:subject"}
        )
    ).json()
    modes = sorted(e["search"]["mode"] for e in with_patient["entry"])
    assert modes == ["include", "match"]

    by_name = (await client.get("/Patient", params={"name": "avila"})).json()
    assert [e["resource"]["id"] for e in by_name["entry"]] == [pid]

    posted = await client.post(
        "/Observation/_search",
        content=b"code=8462-4",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert len(posted.json()["entry"]) == 1


async def test_search_errors_are_outcomes(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/Observation", params={"colour": "red"})
    assert unknown.status_code == 400
    assert "colour" in unknown.json()["issue"][0]["diagnostics"]
    bad_date = await client.get("/Observation", params={"date": "gt2024-13-45"})
    assert bad_date.status_code == 400


async def test_paging_numbers_must_be_small_whole_numbers(client: httpx.AsyncClient) -> None:
    for value in ("9" * 30, "²", "-1"):
        response = await client.get("/Patient", params={"_offset": value})
        assert response.status_code == 400, value
        assert "_offset" in response.json()["issue"][0]["diagnostics"]
