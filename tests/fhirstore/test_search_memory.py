"""A search over large resources holds about one page's budget of bytes, not every match:
the page stops early with a next link, and paging on returns everything, on both databases."""

from __future__ import annotations

import base64
import dataclasses
import os
import tracemalloc
from collections.abc import AsyncIterator

import httpx
import pytest

from herald.runtime import Runtime
from tests.support.herald import running_herald

MB = 1024 * 1024
STORED = 30  # resources of about 1 MB each
PAGE_BYTES = 4 * MB


@pytest.fixture
async def large(database_url: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_herald(database_url, max_body_bytes=2 * MB) as running:
        runtime, client = running
        for _ in range(STORED):
            data = base64.b64encode(os.urandom(768 * 1024)).decode()
            binary = {"resourceType": "Binary", "contentType": "text/plain", "data": data}
            assert (await client.post("/Binary", json=binary)).status_code == 201
        store = runtime.store
        store.search_limits = dataclasses.replace(store.search_limits, max_page_bytes=PAGE_BYTES)
        yield running


async def _traced_get(client: httpx.AsyncClient, url: str, **params: str) -> tuple[bytes, int]:
    """The response body, and the peak of memory allocated while it was asked and answered."""
    tracemalloc.start()
    try:
        response = await client.get(url, params=params)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text[:500]
    return response.content, peak


async def test_a_page_of_large_resources_stays_within_its_byte_budget(
    large: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = large
    body, peak = await _traced_get(client, "/Binary", _count="1000")
    # All 30 MB at once would allocate well over 60 MB (the bodies, then the Bundle).
    assert peak < 6 * PAGE_BYTES, f"{peak / MB:.0f} MB allocated for one page"
    page = httpx.Response(200, content=body).json()
    assert 1 <= len(page["entry"]) <= PAGE_BYTES // MB + 1

    seen = {e["resource"]["id"] for e in page["entry"]}
    links = {link["relation"]: link["url"] for link in page["link"]}
    while "next" in links:
        page = (await client.get(links["next"])).json()
        seen |= {e["resource"]["id"] for e in page["entry"]}
        links = {link["relation"]: link["url"] for link in page["link"]}
    assert len(seen) == STORED  # paging on from a short page skips nothing


async def test_a_resource_larger_than_the_budget_is_still_returned(
    large: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = large
    store = runtime.store
    store.search_limits = dataclasses.replace(store.search_limits, max_page_bytes=1024)
    page = (await client.get("/Binary", params={"_count": "5"})).json()
    assert len(page["entry"]) == 1
    assert any(link["relation"] == "next" for link in page["link"])
