"""A hostile client's searches, on both databases: too many values, criteria, sort keys or
includes are a 400 naming the limit; a search past its deadline is a 503; the service answers
throughout and its connections stay usable."""

from __future__ import annotations

import asyncio
import dataclasses
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import text

from fhirstore.db.deadline import QueryTimeout, query_deadline
from herald.runtime import Runtime

LIVENESS = 20  # seconds: an answer, not a speed


def _values(prefix: str, n: int) -> str:
    return ",".join(f"{prefix}{i}" for i in range(n))


async def _post_search(client: httpx.AsyncClient, path: str, form: list[tuple[str, str]]):
    return await asyncio.wait_for(
        client.post(
            f"{path}/_search",
            content=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        LIVENESS,
    )


def _diagnostics(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]["diagnostics"]


async def _patients(client: httpx.AsyncClient, n: int, family: str) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "name": [{"family": f"{family}{i}"}]},
                "request": {"method": "POST", "url": "Patient"},
            }
            for i in range(n)
        ],
    }
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text


async def test_searches_past_the_limits_are_refused_with_the_limit_named(
    client: httpx.AsyncClient,
) -> None:
    await _patients(client, 3, "Limit")
    cases = [
        ([("name", _values("n", 1500))], "1500 is more than this server takes (100"),
        ([("_id", _values("id", 1000))], "1000 is more than this server takes (100"),
        ([("name", f"n{i}") for i in range(1100)], "51 is more than this server takes (50"),
        ([("_sort", ",".join(["name", "-birthdate"] * 300))], "600 is more than"),
        ([("_revinclude", "Observation:subject")] * 11, "11 is more than this server takes (10"),
    ]
    for form, expected in cases:
        response = await _post_search(client, "/Patient", form)
        assert response.status_code == 400, response.text
        assert expected in _diagnostics(response)
        assert response.json()["issue"][0]["code"] == "too-costly"
    # The GET form of the same search is refused the same way.
    response = await client.get("/Patient", params={"name": _values("n", 1500)})
    assert response.status_code == 400
    assert "HERALD_SEARCH_MAX_OR_VALUES" in _diagnostics(response)
    assert (await client.get("/Patient", params={"name": "Limit0"})).json()["entry"]


async def test_a_search_at_every_limit_at_once_is_answered(client: httpx.AsyncClient) -> None:
    await _patients(client, 5, "Edge")
    form = [("name", ",".join(["Edge3", *(f"x{i}" for i in range(99))]))] * 49
    form += [("_id", _values("no-such-id", 100))]
    form += [("_sort", "name,-birthdate,gender,_id,family")]
    response = await _post_search(client, "/Patient", form)
    assert response.status_code == 200, response.text
    assert not response.json().get("entry")  # no such _id: nothing, but an answer
    form[-2] = ("_id", "")
    response = await _post_search(client, "/Patient", [f for f in form if f[1]])
    assert [e["resource"]["name"][0]["family"] for e in response.json()["entry"]] == ["Edge3"]


async def test_count_above_the_largest_page_is_lowered_to_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient", params={"_count": "999999999"})
    assert response.status_code == 200
    [self_link] = [link["url"] for link in response.json()["link"] if link["relation"] == "self"]
    assert "_count=1000" in self_link


async def test_bundle_get_entries_hold_the_same_limits(client: httpx.AsyncClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient?name={_values('n', 1500)}"}},
            {"request": {"method": "GET", "url": "Patient?name=anyone"}},
        ],
    }
    response = await asyncio.wait_for(client.post("", json=bundle), LIVENESS)
    assert response.status_code == 200, response.text
    refused, answered = response.json()["entry"]
    assert refused["response"]["status"].startswith("400")
    outcome = refused["response"]["outcome"]["issue"][0]["diagnostics"]
    assert "HERALD_SEARCH_MAX_OR_VALUES" in outcome
    assert answered["response"]["status"].startswith("200")


async def test_includes_past_the_included_limit_ask_for_a_smaller_count(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = herald
    for _ in range(3):
        patient = await client.post("/Patient", json={"resourceType": "Patient"})
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "included"},
            "subject": {"reference": f"Patient/{patient.json()['id']}"},
        }
        assert (await client.post("/Observation", json=observation)).status_code == 201
    store = runtime.store
    store.search_limits = dataclasses.replace(store.search_limits, max_included=2)
    query = {"code:text": "included", "_include": "Observation:subject"}
    response = await client.get("/Observation", params=query)
    assert response.status_code == 400
    assert "more than this server takes (2, HERALD_SEARCH_MAX_INCLUDED)" in _diagnostics(response)
    assert "smaller _count" in _diagnostics(response)
    response = await client.get("/Observation", params={**query, "_count": "2"})
    assert response.status_code == 200
    assert [e["search"]["mode"] for e in response.json()["entry"]].count("include") == 2


async def test_a_search_past_its_deadline_is_stopped_and_the_service_answers_after(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = herald
    await _patients(client, 400, "Slow")
    store = runtime.store
    normal = store.search_limits
    store.search_limits = dataclasses.replace(normal, timeout_seconds=0.001)
    costly = [("name:contains", _values("zz", 100))] * 20 + [("_total", "accurate")]
    costly += [("_sort", "name,-birthdate,family,-given,_id")]
    response = await _post_search(client, "/Patient", costly)
    assert response.status_code == 503, response.text
    assert response.json()["issue"][0]["code"] == "timeout"
    assert "HERALD_SEARCH_TIMEOUT_SECONDS" in _diagnostics(response)

    store.search_limits = normal
    for _ in range(12):  # every pooled connection is usable again, reads and writes
        found = await client.get("/Patient", params={"name:exact": "Slow7", "_total": "accurate"})
        assert found.status_code == 200
        assert found.json()["total"] == 1
    created = await client.post("/Patient", json={"resourceType": "Patient"})
    assert created.status_code == 201
    history = await client.get("/Patient/_history", params={"_count": "1"})
    assert history.json()["total"] == 401


async def test_a_query_that_never_ends_is_cancelled_at_the_deadline(runtime: Runtime) -> None:
    endless = text(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
    )
    async with runtime.engine.connect() as conn:
        with pytest.raises(QueryTimeout) as raised:
            async with asyncio.timeout(LIVENESS), query_deadline(conn, 0.2):
                await conn.execute(endless)
        assert raised.value.status == 503
        await conn.rollback()  # what the pool does with it
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        async with query_deadline(conn, 5):  # the deadline is over when its block is
            assert (await conn.execute(text("SELECT 2"))).scalar() == 2
        assert (await conn.execute(text("SELECT 3"))).scalar() == 3


async def test_health_answers_while_hostile_searches_arrive(client: httpx.AsyncClient) -> None:
    hostile = [
        [("name", _values("n", 1500))],
        [("_id", _values("id", 1000))],
        [("name", f"n{i}") for i in range(1100)],
        [("_sort", ",".join(["name"] * 600))],
        [("name", "\\\\," * 5_000)],  # escapes all the way: counted, not parsed
    ] * 4
    searches = asyncio.gather(*(_post_search(client, "/Patient", form) for form in hostile))
    health = [asyncio.wait_for(client.get("http://herald.test/healthz"), 5) for _ in range(5)]
    *answers, refused = await asyncio.gather(*health, searches)
    assert [a.status_code for a in answers] == [200] * 5
    assert {r.status_code for r in refused} == {400}
