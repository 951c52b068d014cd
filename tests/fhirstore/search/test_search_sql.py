"""SQL search on SQLite and PostgreSQL: same answers as the in-memory matcher, plus paging,
sorting, totals and includes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fhirstore.db.schema import metadata, resources, search_index
from fhirstore.search.extract import index_entries
from fhirstore.search.query import parse_search
from fhirstore.search.sql import SearchResult, run_search
from tests.fhirstore.search.search_corpus import DELETED, corpus
from tests.fhirstore.search.test_search_match import MATCH_CASES, matching_ids
from tests.support.databases import DATABASES, fresh_database_url


def _instant(resource: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(resource["meta"]["lastUpdated"].replace("Z", "+00:00"))


async def _store(engine: AsyncEngine, resource: dict[str, Any], *, deleted: bool = False) -> None:
    kind, ident = resource["resourceType"], resource["id"]
    async with engine.begin() as conn:
        await conn.execute(
            insert(resources).values(
                res_type=kind,
                res_id=ident,
                version_id=1,
                last_updated=_instant(resource),
                deleted=deleted,
                body=None if deleted else json.dumps(resource),
            )
        )
        rows = [{"res_type": kind, "res_id": ident, **e.row()} for e in index_entries(resource)]
        await conn.execute(insert(search_index), rows)


@pytest.fixture(scope="module", params=DATABASES)
async def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    url = fresh_database_url(request, str(request.param), tmp_path_factory.mktemp("search"))
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    for resource in corpus():
        await _store(engine, resource)
    # Deleted, but its index rows left behind: the `deleted` flag alone must hide it.
    await _store(engine, DELETED, deleted=True)
    yield engine
    await engine.dispose()


async def search(engine: AsyncEngine, resource_type: str, query: str) -> SearchResult:
    request = parse_search(resource_type, parse_qsl(query, keep_blank_values=True))
    async with engine.connect() as conn:
        return await run_search(conn, request)


def ids(bodies: list[str]) -> list[str]:
    return [json.loads(body)["id"] for body in bodies]


@pytest.mark.parametrize(("resource_type", "query", "expected"), MATCH_CASES)
async def test_sql_agrees_with_in_memory_matching(
    engine: AsyncEngine, resource_type: str, query: str, expected: list[str]
) -> None:
    result = await search(engine, resource_type, query + "&_count=1000")
    assert ids(result.resources) == matching_ids(resource_type, query) == expected
    assert result.total == len(expected)
    assert not result.has_more


async def test_include_follows_references_once(engine: AsyncEngine) -> None:
    result = await search(engine, "Observation", "_id=obs-1,obs-2&_include=Observation:subject")
    assert ids(result.resources) == ["obs-1", "obs-2"]
    assert ids(result.included) == ["pat-1"]


async def test_include_with_target_type_and_wildcard(engine: AsyncEngine) -> None:
    typed = await search(
        engine, "Observation", "_id=obs-3&_include=Observation:performer:Practitioner"
    )
    assert ids(typed.included) == ["prac-1"]
    everything = await search(engine, "Observation", "_id=obs-1&_include=*")
    assert sorted(ids(everything.included)) == ["enc-1", "pat-1", "prac-1"]
    external = await search(engine, "Observation", "_id=obs-5&_include=Observation:subject")
    assert external.included == []


async def test_include_skips_resources_already_in_the_page(engine: AsyncEngine) -> None:
    result = await search(engine, "Patient", "_id=pat-2,pat-3&_include=Patient:link")
    assert ids(result.resources) == ["pat-2", "pat-3"]
    assert result.included == []


async def test_revinclude(engine: AsyncEngine) -> None:
    result = await search(engine, "Observation", "_id=obs-1,obs-3&_revinclude=Provenance:target")
    assert ids(result.included) == ["prov-1", "prov-2"]
    wildcard = await search(engine, "Observation", "_id=obs-3&_revinclude=Provenance:*")
    assert ids(wildcard.included) == ["prov-1"]


@pytest.mark.parametrize(
    ("resource_type", "query", "expected"),
    [
        ("Patient", "_sort=birthdate", ["pat-1", "pat-2", "pat-3", "pat-5", "pat-4"]),
        ("Patient", "_sort=-birthdate", ["pat-5", "pat-3", "pat-2", "pat-1", "pat-4"]),
        ("Patient", "_sort=family", ["pat-4", "pat-1", "pat-3", "pat-2", "pat-5"]),
        ("Patient", "_sort=gender,-birthdate", ["pat-3", "pat-2", "pat-5", "pat-1", "pat-4"]),
        ("Patient", "_sort=-_lastUpdated", ["pat-5", "pat-4", "pat-3", "pat-2", "pat-1"]),
        (
            "Observation",
            "_sort=-value-quantity",
            ["obs-2", "obs-4", "obs-1", "obs-3", "obs-5", "obs-6", "obs-7"],
        ),
    ],
)
async def test_sort(
    engine: AsyncEngine, resource_type: str, query: str, expected: list[str]
) -> None:
    assert ids((await search(engine, resource_type, query)).resources) == expected


async def test_offset_paging_walks_every_result_once(engine: AsyncEngine) -> None:
    pages = [await search(engine, "Observation", f"_count=3&_offset={o}") for o in (0, 3, 6)]
    assert [ids(page.resources) for page in pages] == [
        ["obs-1", "obs-2", "obs-3"],
        ["obs-4", "obs-5", "obs-6"],
        ["obs-7"],
    ]
    assert [page.has_more for page in pages] == [True, True, False]
    assert [page.total for page in pages] == [7, 7, 7]
    beyond = await search(engine, "Observation", "_count=3&_offset=30")
    assert (beyond.resources, beyond.has_more, beyond.total) == ([], False, 7)


async def test_total_modes(engine: AsyncEngine) -> None:
    assert (await search(engine, "Observation", "_count=2&_total=none")).total is None
    assert (await search(engine, "Observation", "_count=2&_total=accurate")).total == 7
    assert (await search(engine, "Observation", "_count=2&_total=estimate")).total == 7
    count_only = await search(engine, "Observation", "_count=0&_total=accurate")
    assert (count_only.resources, count_only.has_more, count_only.total) == ([], True, 7)


async def test_deleted_resources_are_never_returned(engine: AsyncEngine) -> None:
    result = await search(engine, "Patient", "gender=male&_count=100")
    assert ids(result.resources) == ["pat-1", "pat-5"]
    assert (await search(engine, "Patient", "_id=pat-deleted")).resources == []
