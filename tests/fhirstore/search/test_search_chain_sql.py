"""Chained parameters and `_has` on SQLite and PostgreSQL: what each finds in the search corpus,
the boundaries (deleted, missing and external targets, modifiers on the last parameter), and
that every step is an index lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fhirstore.db.schema import metadata, resources
from fhirstore.search.query import parse_search
from fhirstore.search.sql import _filters
from tests.fhirstore.search.search_corpus import DELETED, LOINC, corpus
from tests.fhirstore.search.test_search_sql import _store, ids, search
from tests.support.databases import DATABASES, fresh_database_url


def _observation(ident: str, subject: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
        "meta": {"lastUpdated": "2024-07-01T00:00:00Z"},
    }


# About the deleted patient, about a patient never stored, and an Observation deleted since.
GHOST = _observation("obs-ghost", "Patient/pat-deleted", "1111-1")
DANGLING = _observation("obs-dangling", "Patient/nobody", "2222-2")
GONE = _observation("obs-gone", "Patient/pat-4", "3333-3")


@pytest.fixture(scope="module", params=DATABASES)
async def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    url = fresh_database_url(request, str(request.param), tmp_path_factory.mktemp("chains"))
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    for resource in [*corpus(), GHOST, DANGLING]:
        await _store(engine, resource)
    # Deleted, with their index rows left behind: the `deleted` flag alone must hide them.
    await _store(engine, DELETED, deleted=True)
    await _store(engine, GONE, deleted=True)
    yield engine
    await engine.dispose()


@pytest.mark.parametrize(
    ("resource_type", "query", "expected"),
    [
        # Forward, one link: name (prefix, folded), identifier with and without system.
        ("Observation", "subject:Patient.name=smith", ["obs-3"]),
        ("Observation", "patient.name=MÜLLER", ["obs-1", "obs-2"]),
        (
            "Observation",
            "patient.identifier=http://hospital.example.org/mrn|MRN-001",
            ["obs-1", "obs-2"],
        ),
        ("Observation", "patient.identifier=MRN-001", ["obs-1", "obs-2", "obs-4"]),
        ("Observation", "subject.birthdate=1970", ["obs-1", "obs-2"]),
        ("Encounter", "subject:Patient.gender=female", ["enc-2"]),
        # OR values on the last parameter; two chains are ANDed, each on its own.
        ("Observation", "patient.gender=female,other", ["obs-3", "obs-4", "obs-6"]),
        ("Observation", "patient.gender=female&patient.name=sever", ["obs-4"]),
        # Several links.
        (
            "Observation",
            "subject:Patient.general-practitioner:Practitioner.name=house",
            ["obs-1", "obs-2"],
        ),
        ("Observation", "patient.organization.name=shelbyville", ["obs-3"]),
        # Modifiers on the last parameter, as unchained.
        ("Observation", "subject:Patient.name:exact=Smith", ["obs-3"]),
        ("Observation", "subject:Patient.name:exact=smith", []),
        ("Observation", "subject:Patient.name:contains=eil", ["obs-4"]),
        ("Observation", "subject:Patient.gender:not=male", ["obs-3", "obs-4", "obs-6"]),
        ("Observation", "subject:Patient.birthdate:missing=true", ["obs-6"]),
        (
            "Observation",
            "subject:Patient.birthdate:missing=false",
            ["obs-1", "obs-2", "obs-3", "obs-4"],
        ),
        ("Observation", "patient.organization:missing=true", ["obs-4", "obs-6"]),
        # The common parameters the resource row holds itself.
        ("Observation", "patient._id=pat-3", ["obs-4"]),
        ("Observation", "patient._lastUpdated=lt2024-01-01T00:02:00Z", ["obs-1", "obs-2", "obs-3"]),
        # A link reaches only stored, undeleted resources named by a relative reference.
        ("Observation", "patient._id=nobody", []),
        ("Observation", "patient=nobody", ["obs-dangling"]),
        ("Observation", "patient.name=ghost", []),
        ("Observation", "patient._id=pat-deleted", []),
        ("Observation", "subject:Patient._id=77", []),  # https://other.example.org/.../77
        ("Observation", "subject:Group._id=grp-1", []),  # never stored
        # Reverse.
        ("Patient", "_has:Observation:patient:code=8867-4", ["pat-1"]),
        ("Patient", "_has:Observation:patient:code=2339-0", ["pat-2", "pat-3"]),
        (
            "Patient",
            "_has:Observation:patient:code=http://loinc.org|2339-0,8867-4",
            ["pat-1", "pat-2", "pat-3"],
        ),
        (
            "Patient",
            "_has:Observation:patient:code=2339-0&_has:Observation:patient:code=8867-4",
            [],
        ),
        ("Patient", "_has:Observation:performer:code=2339-0", ["pat-2"]),
        # A union parameter (combo-*) at the end: its members' rows, paired within a component.
        ("Patient", "_has:Observation:patient:combo-code=8480-6", ["pat-4"]),
        ("Patient", "_has:Observation:patient:combo-code-value-quantity=8480-6$gt100", ["pat-4"]),
        ("Patient", "_has:Observation:patient:combo-code-value-quantity=8462-4$gt100", []),
        ("Patient", "_has:Observation:patient:status:not=final", ["pat-1"]),
        ("Patient", "_has:Observation:patient:code=3333-3", []),  # obs-gone is deleted
        ("Patient", "_has:Observation:patient:code=1111-1", []),  # pat-deleted is deleted
        ("Observation", "_has:Provenance:target:agent=Organization/org-1", ["obs-1"]),
        ("Practitioner", "_has:Observation:performer:_id=obs-3", ["prac-1"]),
        # Nested, and mixed with forward links.
        (
            "Practitioner",
            "_has:Patient:general-practitioner:_has:Observation:patient:code=8867-4",
            ["prac-1"],
        ),
        (
            "Practitioner",
            "_has:Patient:general-practitioner:_has:Observation:patient:code=2339-0",
            [],
        ),
        (
            "Patient",
            "_has:Observation:subject:performer:Practitioner.name=house",
            ["pat-1", "pat-2"],
        ),
        ("Observation", "patient._has:Condition:subject:code=38341003", ["obs-3"]),
        (
            "Organization",
            "_has:Patient:organization:_has:Encounter:patient:status=finished",
            ["org-1"],
        ),
    ],
)
async def test_chains_find_what_the_linked_resources_say(
    engine: AsyncEngine, resource_type: str, query: str, expected: list[str]
) -> None:
    result = await search(engine, resource_type, query + "&_count=100&_total=accurate")
    assert ids(result.resources) == expected
    assert result.total == len(expected)


async def test_chains_combine_with_plain_parameters_paging_and_sort(engine: AsyncEngine) -> None:
    query = "patient.identifier=MRN-001&code=8867-4&_sort=-date&_count=1"
    first = await search(engine, "Observation", query)
    assert (ids(first.resources), first.has_more, first.total) == (["obs-2"], True, 2)
    second = await search(engine, "Observation", query + "&_offset=1")
    assert (ids(second.resources), second.has_more) == (["obs-1"], False)
    included = await search(
        engine, "Patient", "_has:Observation:patient:code=8867-4&_revinclude=Observation:patient"
    )
    assert ids(included.resources) == ["pat-1"]
    assert ids(included.included) == ["obs-1", "obs-2"]


async def _plan(engine: AsyncEngine, resource_type: str, query: str) -> list[str]:
    """The plan's lines; on PostgreSQL with sequential scans priced out, so a step that has
    no index to use still shows as a `Seq Scan` (the tables are too small for its statistics
    to prefer an index otherwise)."""
    request = parse_search(resource_type, parse_qsl(query))
    statement = select(resources.c.res_id).where(*_filters(request, None))
    sql = str(statement.compile(engine.sync_engine, compile_kwargs={"literal_binds": True}))
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = (await conn.execute(text("EXPLAIN QUERY PLAN " + sql))).all()
            return [str(row[-1]) for row in rows]
        await conn.execute(text("SET LOCAL enable_seqscan = off"))  # this transaction
        return [str(row[0]) for row in (await conn.execute(text("EXPLAIN " + sql))).all()]


@pytest.mark.parametrize(
    ("resource_type", "query"),
    [
        ("Observation", "subject:Patient.general-practitioner:Practitioner.name=house"),
        ("Practitioner", "_has:Patient:general-practitioner:_has:Observation:patient:code=1"),
        ("Patient", "_has:Observation:subject:performer:Practitioner.name:missing=true"),
    ],
)
async def test_every_link_is_an_index_lookup(
    engine: AsyncEngine, resource_type: str, query: str
) -> None:
    steps = await _plan(engine, resource_type, query)
    if engine.dialect.name == "sqlite":
        lookups = [step for step in steps if step.startswith("SEARCH")]
        assert lookups and all(" USING " in step for step in lookups)
        assert not [step for step in steps if step.startswith("SCAN")]
        # The searched type by its index, then per link an entry and the row it reaches.
        assert sum("search_index" in step for step in lookups) >= 3
    else:
        assert not [step for step in steps if "Seq Scan" in step], steps
        assert sum("Index" in step and "search_index" in step for step in steps) >= 3
