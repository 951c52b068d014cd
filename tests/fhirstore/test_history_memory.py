"""History pages and batch responses over large resources hold about one page's budget of
bytes: a history page stops early with a next link that skips no version and repeats none, and
a batch's GET entries together stay within the budget (the entries after it are refused, to be
asked on their own), on both databases."""

from __future__ import annotations

import base64
import dataclasses
import os
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from herald.runtime import Runtime
from tests.support.herald import running_herald

MB = 1024 * 1024
RESOURCES = 6
VERSIONS = 5  # of each resource: 30 versions of about 1 MB each
PAGE_BYTES = 4 * MB


def _binary(resource_id: str) -> dict[str, Any]:
    data = base64.b64encode(os.urandom(768 * 1024)).decode()
    return {"resourceType": "Binary", "id": resource_id, "contentType": "text/plain", "data": data}


@pytest.fixture
async def large(database_url: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_herald(database_url, max_body_bytes=2 * MB) as running:
        runtime, client = running
        for n in range(RESOURCES):
            for _ in range(VERSIONS):
                response = await client.put(f"/Binary/b{n}", json=_binary(f"b{n}"))
                assert response.status_code in (200, 201), response.text[:300]
        store = runtime.store
        store.search_limits = dataclasses.replace(store.search_limits, max_page_bytes=PAGE_BYTES)
        yield running


async def _traced(ask: Callable[[], Awaitable[httpx.Response]]) -> tuple[dict[str, Any], int]:
    """The response's JSON, and the peak of memory allocated while it was asked and answered."""
    tracemalloc.start()
    try:
        response = await ask()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text[:500]
    return response.json(), peak


def _links(page: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in page["link"]}


def _version_keys(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["request"]["url"], e["response"]["etag"]) for e in page["entry"]]


@pytest.mark.parametrize("path", ["/_history", "/Binary/_history", "/Binary/b0/_history"])
async def test_a_history_page_stays_within_its_byte_budget_and_pages_on_to_every_version(
    large: tuple[Runtime, httpx.AsyncClient], path: str
) -> None:
    _, client = large
    page, peak = await _traced(lambda: client.get(path, params={"_count": "1000"}))
    # All 30 MB at once would allocate well over 60 MB (the bodies, then the Bundle).
    assert peak < 6 * PAGE_BYTES, f"{peak / MB:.0f} MB allocated for one history page"
    assert 1 <= len(page["entry"]) <= PAGE_BYTES // MB + 1
    total = page["total"]  # the server's history also holds what Herald stores at start
    assert "next" in _links(page)

    seen = _version_keys(page)
    while "next" in _links(page):
        page = (await client.get(_links(page)["next"])).json()
        seen += _version_keys(page)
    assert len(seen) == total  # no version twice ...
    assert len(set(seen)) == total  # ... and none left out
    binaries = {key for key in seen if key[0].startswith("Binary/")}
    assert len(binaries) == (VERSIONS if path.startswith("/Binary/b0") else RESOURCES * VERSIONS)


async def test_a_version_larger_than_the_budget_is_still_returned(
    large: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = large
    store = runtime.store
    store.search_limits = dataclasses.replace(store.search_limits, max_page_bytes=1024)
    page = (await client.get("/Binary/b1/_history", params={"_count": "3"})).json()
    assert len(page["entry"]) == 1
    assert "next" in _links(page)


async def test_a_batch_of_reads_past_the_budget_answers_the_rest_with_an_outcome(
    large: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = large
    reads = [{"request": {"method": "GET", "url": f"Binary/b{n % RESOURCES}"}} for n in range(24)]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": reads}
    bundle, peak = await _traced(lambda: client.post("/", json=batch))
    # 24 reads of 1 MB each would allocate well over 48 MB.
    assert peak < 6 * PAGE_BYTES, f"{peak / MB:.0f} MB allocated for one batch response"
    statuses = [e["response"]["status"] for e in bundle["entry"]]
    answered = [s for s in statuses if s.startswith("200")]
    assert 1 <= len(answered) <= PAGE_BYTES // MB + 1
    assert statuses[: len(answered)] == answered  # the first reads fit, the later ones do not
    refused = bundle["entry"][len(answered)]["response"]
    assert refused["status"] == "400"
    text = refused["outcome"]["issue"][0]["diagnostics"]
    assert "HERALD_SEARCH_MAX_PAGE_BYTES" in text and "on its own" in text
    assert all(s == "400" for s in statuses[len(answered) :])

    alone = await client.get("/Binary/b5")  # asked on its own, it is there
    assert alone.status_code == 200


async def test_a_search_in_a_batch_cut_short_by_the_budget_says_where_to_go_on(
    large: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = large
    entry = {"request": {"method": "GET", "url": "Binary?_count=100"}}
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    response = await client.post("/", json=batch)
    assert response.status_code == 200
    searchset = response.json()["entry"][0]["resource"]
    ids = [e["resource"]["id"] for e in searchset["entry"]]
    assert 1 <= len(ids) < RESOURCES
    following = _links(searchset)["next"]
    assert following.startswith("Binary?")
    rest = (await client.get(f"/{following}")).json()
    ids += [e["resource"]["id"] for e in rest["entry"]]
    while "next" in _links(rest):
        rest = (await client.get(_links(rest)["next"])).json()
        ids += [e["resource"]["id"] for e in rest["entry"]]
    assert sorted(ids) == [f"b{n}" for n in range(RESOURCES)]


async def test_a_transaction_whose_reads_exceed_the_budget_is_refused_and_writes_nothing(
    large: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = large
    reads = [{"request": {"method": "GET", "url": f"Binary/b{n}"}} for n in range(RESOURCES)]
    write = {
        "request": {"method": "PUT", "url": "Patient/p-tx"},
        "resource": {"resourceType": "Patient", "id": "p-tx"},
    }
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [write, *reads]}
    response = await client.post("/", json=transaction)
    assert response.status_code == 400, response.text[:300]
    assert "HERALD_SEARCH_MAX_PAGE_BYTES" in response.text
    assert (await client.get("/Patient/p-tx")).status_code == 404
