"""`_include:iterate` and `_revinclude:iterate` on SQLite and PostgreSQL: followed from what the
includes brought in, round after round, cycles included once, bounded in depth and budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fhirstore.api.capability import capability_statement
from fhirstore.db.schema import metadata
from fhirstore.errors import InvalidSearch
from fhirstore.search.limits import SearchLimits, SearchTooCostly
from fhirstore.search.query import parse_search
from fhirstore.search.sql import SearchResult, run_search
from tests.fhirstore.search.test_search_sql import _store, ids
from tests.support.databases import DATABASES, fresh_database_url

UPDATED = {"lastUpdated": "2024-01-01T00:00:00Z"}


def patient(res_id: str, *, links: tuple[str, ...] = (), gp: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": res_id, "meta": UPDATED}
    if links:
        resource["link"] = [
            {"other": {"reference": f"Patient/{o}"}, "type": "seealso"} for o in links
        ]
    if gp is not None:
        resource["generalPractitioner"] = [{"reference": f"Practitioner/{gp}"}]
    return resource


def observation(res_id: str, subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": res_id,
        "meta": UPDATED,
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": f"Patient/{subject}"},
    }


GRAPH: list[dict[str, Any]] = [
    {
        "resourceType": "MedicationRequest",
        "id": "mr-1",
        "meta": UPDATED,
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "aspirin"},
        "subject": {"reference": "Patient/a1"},
        "requester": {"reference": "Practitioner/dr-1"},
    },
    # a1 -> a2 -> a3 -> a1: a cycle of links.
    patient("a1", links=("a2",), gp="dr-2"),
    patient("a2", links=("a3",), gp="dr-3"),
    patient("a3", links=("a1",)),
    *({"resourceType": "Practitioner", "id": p, "meta": UPDATED} for p in ("dr-1", "dr-2", "dr-3")),
    observation("ob-2", "a2"),
    observation("ob-3", "a3"),
    # c0 -> c1 -> ... -> c6: a line of links six long.
    *(patient(f"c{n}", links=(f"c{n + 1}",)) for n in range(6)),
    patient("c6"),
]


@pytest.fixture(scope="module", params=DATABASES)
async def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    url = fresh_database_url(request, str(request.param), tmp_path_factory.mktemp("iterate"))
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    for resource in GRAPH:
        await _store(engine, resource)
    yield engine
    await engine.dispose()


async def search(
    engine: AsyncEngine, resource_type: str, query: str, limits: SearchLimits | None = None
) -> SearchResult:
    pairs = parse_qsl(query, keep_blank_values=True)
    request = parse_search(resource_type, pairs, limits=limits or SearchLimits())
    async with engine.connect() as conn:
        return await run_search(conn, request)


async def test_an_iterate_include_follows_the_included_resources(engine: AsyncEngine) -> None:
    query = "_include=MedicationRequest:patient&_include:iterate=Patient:general-practitioner"
    result = await search(engine, "MedicationRequest", query)

    assert ids(result.resources) == ["mr-1"]
    assert ids(result.included) == ["a1", "dr-2"]  # not dr-1: the requester was not asked for


async def test_without_iterate_an_include_must_start_from_the_searched_type() -> None:
    with pytest.raises(InvalidSearch) as refused:
        parse_search("MedicationRequest", [("_include", "Patient:general-practitioner")])
    assert "_include:iterate=Patient:general-practitioner" in str(refused.value)


async def test_a_cycle_of_references_is_included_once(engine: AsyncEngine) -> None:
    result = await search(engine, "Patient", "_id=a1&_include:iterate=Patient:link")

    assert ids(result.resources) == ["a1"]
    assert ids(result.included) == ["a2", "a3"]
    plain = await search(engine, "Patient", "_id=a1&_include=Patient:link")
    assert ids(plain.included) == ["a2"]


async def test_revinclude_iterate_finds_what_points_at_included_resources(
    engine: AsyncEngine,
) -> None:
    query = "_id=a1&_include:iterate=Patient:link&_revinclude:iterate=Observation:subject:Patient"
    result = await search(engine, "Patient", query)

    assert sorted(ids(result.included)) == ["a2", "a3", "ob-2", "ob-3"]
    # Not iterating, the revinclude looks at the match only (nothing points at a1).
    plain = "_id=a1&_include:iterate=Patient:link&_revinclude=Observation:subject"
    assert sorted(ids((await search(engine, "Patient", plain)).included)) == ["a2", "a3"]


async def test_the_depth_is_bounded_and_the_refusal_names_the_limit(engine: AsyncEngine) -> None:
    # From c1: c2 with the matches, then c3, c4, c5, c6 in four more rounds, and nothing after.
    within = await search(engine, "Patient", "_id=c1&_include:iterate=Patient:link")
    assert ids(within.included) == ["c2", "c3", "c4", "c5", "c6"]
    # From c0 the line goes on past the fourth round: refused, not cut short.
    with pytest.raises(SearchTooCostly) as refused:
        await search(engine, "Patient", "_id=c0&_include:iterate=Patient:link")
    message = str(refused.value)
    assert "'_include:iterate': 5 is more than this server takes (4" in message
    assert "HERALD_SEARCH_MAX_INCLUDE_DEPTH" in message
    shallow = SearchLimits(max_include_depth=1)
    with pytest.raises(SearchTooCostly):
        await search(engine, "Patient", "_id=c3&_include:iterate=Patient:link", shallow)
    two = await search(engine, "Patient", "_id=c4&_include:iterate=Patient:link", shallow)
    assert ids(two.included) == ["c5", "c6"]


async def test_every_round_counts_against_the_included_budget(engine: AsyncEngine) -> None:
    few = SearchLimits(max_included=3)
    with pytest.raises(SearchTooCostly) as refused:
        await search(engine, "Patient", "_id=c1&_include:iterate=Patient:link", few)
    assert "HERALD_SEARCH_MAX_INCLUDED" in str(refused.value)
    enough = await search(engine, "Patient", "_id=c3&_include:iterate=Patient:link", few)
    assert ids(enough.included) == ["c4", "c5", "c6"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("_include:iterate=*", "expects SourceType:param or SourceType:*"),
        ("_include:recurse=Patient:link", ":recurse is not supported; use _include or"),
        ("_revinclude:deep=Observation:subject", "use _revinclude or _revinclude:iterate"),
    ],
)
def test_what_iterate_does_not_take_is_refused(query: str, words: str) -> None:
    with pytest.raises(InvalidSearch) as refused:
        parse_search("Patient", parse_qsl(query))
    assert words in str(refused.value)


def test_iterate_is_parsed_with_any_source_or_target_type() -> None:
    request = parse_search(
        "Encounter",
        [
            ("_include:iterate", "Patient:link:Patient"),
            ("_revinclude:iterate", "Observation:subject:Patient"),
            ("_include", "Encounter:subject"),
        ],
    )
    assert [(i.source_type, i.iterate) for i in request.include] == [
        ("Patient", True),
        ("Encounter", False),
    ]
    [revinclude] = request.revinclude
    assert (revinclude.source_type, revinclude.target_type, revinclude.iterate) == (
        "Observation",
        "Patient",
        True,
    )


def test_the_capability_statement_says_iterate_is_supported() -> None:
    statement = capability_statement("http://h/fhir", software_version="0", now="2024-01-01")
    params = {p["name"]: p for p in statement["rest"][0]["searchParam"]}
    for name in ("_include", "_revinclude"):
        assert ":iterate" in params[name]["documentation"]
