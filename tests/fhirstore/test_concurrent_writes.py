"""Many clients writing at once (their writes share transactions): each gets its own answer."""

from __future__ import annotations

import asyncio

import httpx


async def test_concurrent_writes_keep_their_own_outcomes(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/shared", json={"resourceType": "Patient", "id": "shared"})

    async def create(n: int) -> httpx.Response:
        return await client.post("/Patient", json={"resourceType": "Patient", "gender": "other"})

    async def bump(n: int) -> httpx.Response:
        body = {"resourceType": "Patient", "id": "shared", "birthDate": f"19{n + 10}-01-01"}
        return await client.put("/Patient/shared", json=body)

    async def stale() -> httpx.Response:
        body = {"resourceType": "Patient", "id": "shared"}
        return await client.put("/Patient/shared", json=body, headers={"If-Match": 'W/"999"'})

    responses = await asyncio.gather(
        *(create(n) for n in range(40)), *(bump(n) for n in range(10)), stale()
    )
    created, bumped, refused = responses[:40], responses[40:50], responses[50]
    assert [r.status_code for r in created] == [201] * 40
    assert len({r.json()["id"] for r in created}) == 40
    assert [r.status_code for r in bumped] == [200] * 10
    assert sorted(int(r.json()["meta"]["versionId"]) for r in bumped) == list(range(2, 12))
    assert refused.status_code == 412

    history = (await client.get("/Patient/shared/_history")).json()
    assert history["total"] == 11


async def test_racing_creates_of_one_new_id_never_fail_with_500(client: httpx.AsyncClient) -> None:
    def bundle(n: int) -> dict:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": {"resourceType": "Patient", "id": "race", "gender": "other"},
                    "request": {"method": "PUT", "url": "Patient/race"},
                }
            ],
        }

    responses = await asyncio.gather(*(client.post("", json=bundle(n)) for n in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert 500 not in statuses
    assert set(statuses) <= {200, 409}
    conflicts = [r for r in responses if r.status_code == 409]
    assert all(r.json()["issue"][0]["code"] == "conflict" for r in conflicts)
    assert (await client.get("/Patient/race")).status_code == 200
