"""Composite parameters, quantities across UCUM units, token `:of-type`, `:in` and `:not-in`.

Each case runs on SQLite and PostgreSQL and through the in-memory matcher (the subscription
path), which must give the same answer; `:in` / `:not-in` are expanded from the stored
ValueSets first, as a search does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fhirstore.access.boundary import Access
from fhirstore.access.narrowing import Narrowing
from fhirstore.access.principal import Principal
from fhirstore.access.scopes import Scopes
from fhirstore.db.schema import metadata
from fhirstore.errors import InvalidSearch
from fhirstore.search.limits import SearchLimits, SearchTooCostly
from fhirstore.search.match import matches
from fhirstore.search.query import parse_search
from fhirstore.search.sql import run_search
from fhirstore.search.valuesets import expand_criteria
from tests.fhirstore.search.terms_corpus import VS, terms_corpus
from tests.fhirstore.search.test_search_sql import _store, ids
from tests.support.databases import DATABASES, fresh_database_url

CORPUS = terms_corpus()
PRESSURE = ["bp-1", "bp-2", "bp-3"]
LOINC_MR = "http://terminology.hl7.org/CodeSystem/v2-0203|MR"
UCUM = "http://unitsofmeasure.org"
NOT_SYSTOLIC = [
    r["id"]
    for r in CORPUS
    if r["resourceType"] == "Observation" and r["id"] not in (*PRESSURE, "mixed")
]

# (resource type, query, ids expected in corpus order). `+` must be sent as %2B.
CASES: list[tuple[str, str, list[str]]] = [
    # composite: both parts within the same component
    ("Observation", "component-code-value-quantity=http://loinc.org|8480-6$gt140", ["bp-1"]),
    ("Observation", "component-code-value-quantity=8462-4$gt90", ["bp-2"]),
    ("Observation", "component-code-value-quantity=8462-4$gt120", []),  # systolic is not it
    ("Observation", "component-code-value-quantity=8480-6$lt100", ["bp-3"]),  # 16, unitless
    ("Observation", "component-code-value-quantity=8462-4$gt90,8480-6$gt140", ["bp-1", "bp-2"]),
    ("Observation", "component-code-value-quantity=http://snomed.info/sct|8480-6$gt1", []),
    ("Observation", "component-code-value-quantity=|8480-6$gt1", []),
    # composite quantity units: as written (code alone) or through UCUM (kPa vs mm[Hg])
    ("Observation", "component-code-value-quantity=8480-6$ge120||mm[Hg]", ["bp-1"]),
    (
        "Observation",
        "component-code-value-quantity=8480-6$ge120|http://unitsofmeasure.org|mm[Hg]",
        ["bp-1", "bp-3"],
    ),
    (
        "Observation",
        "component-code-value-quantity=8480-6$gt120.01|http://unitsofmeasure.org|mm[Hg]",
        ["bp-1"],
    ),
    # combo-*: the unions of the code-level and component-level parameters, answered from
    # their rows; a code pairs with the value of its own element only
    ("Observation", "combo-code-value-quantity=8480-6$gt140", ["bp-1"]),
    ("Observation", "combo-code-value-quantity=85354-9$gt1", []),  # the panel has no value
    ("Observation", "combo-code-value-quantity=8462-4$gt140", []),  # 150 is the systolic's
    ("Observation", "combo-code-value-quantity=8480-6$lt90", ["bp-3"]),  # 16, unitless
    ("Observation", "combo-code-value-quantity=2339-0$lt1", ["glu-g"]),  # code level
    ("Observation", "combo-code-value-quantity=mixed$5||mg", ["mixed"]),
    ("Observation", "combo-code-value-quantity=8480-6$110||mm[Hg]", ["mixed"]),
    ("Observation", f"combo-code-value-quantity=8480-6$110|{UCUM}|mm[Hg]", ["mixed"]),
    ("Observation", "combo-code-value-quantity=mixed$gt100", []),  # the component's 110
    ("Observation", "combo-code-value-quantity=8480-6$5||mg", []),  # the Observation's 5 mg
    ("Observation", "combo-code-value-quantity:missing=true", ["covid", "urine", "dated"]),
    ("Observation", "combo-code-value-concept=94500-6$260385009", ["covid"]),
    ("Observation", "combo-code-value-concept=8867-4$not-performed", []),  # absent, no value
    ("Observation", "combo-code=http://loinc.org|8480-6", [*PRESSURE, "mixed"]),
    ("Observation", "combo-code=mixed,8867-4", ["mixed"]),
    ("Observation", "combo-code=2339-0", ["glu-g", "glu-mg", "glu-local"]),
    ("Observation", "combo-code:not=8480-6", NOT_SYSTOLIC),
    ("Observation", "combo-code:missing=true", []),
    ("Observation", "combo-value-quantity=5.0||mg", ["mass-5", "mixed"]),
    ("Observation", "combo-value-quantity=110||mm[Hg]", ["mixed"]),
    ("Observation", f"combo-value-quantity=gt140|{UCUM}|mm[Hg]", ["bp-1"]),
    ("Observation", f"combo-value-quantity=16|{UCUM}|kPa", ["bp-2", "bp-3"]),  # 118 mm[Hg]
    ("Observation", "combo-value-quantity:missing=true", ["covid", "urine", "dated"]),
    ("Observation", "combo-value-concept=260385009", ["covid"]),
    ("Observation", "combo-data-absent-reason=not-performed", ["mixed"]),
    ("Observation", "data-absent-reason=not-performed", []),
    ("Observation", "component-data-absent-reason=not-performed", ["mixed"]),
    (
        "Observation",
        "code-value-quantity=http://loinc.org|2339-0$0.1|http://unitsofmeasure.org|g/dL",
        ["glu-g", "glu-mg"],
    ),
    ("Observation", "code-value-quantity=2339-0$100|http://example.org/units|mg/dL", ["glu-local"]),
    ("Observation", "code-value-quantity=2339-0$lt1", ["glu-g"]),
    ("Observation", "code-value-concept=94500-6$http://snomed.info/sct|260385009", ["covid"]),
    ("Observation", "code-value-concept=94500-6$260385009", ["covid"]),
    ("Observation", "code-value-concept=94500-6$|260385009", []),
    ("Observation", "code-value-concept=94500-6$http://loinc.org|260385009", []),
    ("Observation", "code-value-concept=94500-6$26038500", []),  # a code, not a prefix
    ("Observation", "code-value-string=5767-9$slightly", ["urine"]),
    ("Observation", "code-value-string=5767-9$cloudy", []),
    ("Observation", "code-value-date=dated$2024-03", ["dated"]),
    ("Observation", "code-value-date=dated$gt2024-03-01T10:00:00Z", []),
    (
        "Observation",
        "code-value-quantity:missing=true",
        [*PRESSURE, "covid", "urine", "dated"],
    ),
    # quantities through UCUM
    ("Observation", "value-quantity=gt5.4|http://unitsofmeasure.org|mg", ["mass-ug", "mass-5.45"]),
    ("Observation", "value-quantity=5.4|http://unitsofmeasure.org|mg", ["mass-5.4", "mass-5350ug"]),
    ("Observation", "value-quantity=5400|http://unitsofmeasure.org|ug", ["mass-5.4"]),
    ("Observation", "value-quantity=6|http://unitsofmeasure.org|mg", ["mass-ug"]),
    ("Observation", "value-quantity=6000||ug", ["mass-ug"]),  # a code alone: as written
    ("Observation", "value-quantity=6||mg", []),
    ("Observation", "value-quantity=lt0.001", []),  # no unit: never the rows in base units
    ("Observation", "value-quantity=37|http://unitsofmeasure.org|Cel", ["temp-c", "temp-f"]),
    ("Observation", "value-quantity=3|http://unitsofmeasure.org|[IU]/L", ["iu-l"]),
    ("Observation", "value-quantity=3|http://unitsofmeasure.org|[IU]/mL", []),  # arbitrary
    ("Observation", "value-quantity=5.4|http://unitsofmeasure.org|mmol/L", []),  # no molar mass
    (
        "Observation",
        "value-quantity=0.1|http://unitsofmeasure.org|g/dL",
        ["glu-g", "glu-mg"],
    ),
    ("Observation", "value-quantity=100|http://example.org/units|mg/dL", ["glu-local"]),
    ("Observation", "value-quantity=100|http://unitsofmeasure.org|mg/dL", ["glu-g", "glu-mg"]),
    # token :of-type: the Identifier's type coding and its value
    ("Patient", f"identifier:of-type={LOINC_MR}|12345", ["p-1"]),
    ("Patient", "identifier:of-type=|MR|12345", ["p-1"]),
    ("Patient", f"identifier:of-type={LOINC_MR}|99999,{LOINC_MR}|12345", ["p-1", "p-3"]),
    ("Patient", f"identifier:of-type={LOINC_MR}|1234", []),
    ("Patient", "identifier:of-type=http://other.org|MR|12345", []),
    ("Patient", "identifier=http://terminology.hl7.org/CodeSystem/v2-0203|12345", []),
    ("Patient", "identifier=12345", ["p-1", "p-2", "p-4"]),
    # token :in / :not-in against stored ValueSets
    ("Observation", f"code:in={VS}/pressure", PRESSURE),
    ("Observation", "code:in=ValueSet/pressure", PRESSURE),
    ("Observation", f"code:in={VS}/glucose", ["glu-g", "glu-mg", "glu-local"]),
    ("Observation", f"code:in={VS}/both", ["glu-g", "glu-mg", "glu-local"]),  # panel excluded
    (
        "Observation",
        f"combo-code:in={VS}/both",
        [*PRESSURE, "glu-g", "glu-mg", "glu-local", "mixed"],
    ),
    ("Observation", f"combo-code:in={VS}/systolic-only", [*PRESSURE, "mixed"]),
    ("Observation", f"code:in={VS}/systolic-only", []),
    ("Observation", f"value-concept:in={VS}/expanded", ["covid"]),
    ("Observation", f"code:in={VS}/versioned|2", PRESSURE),
    (
        "Observation",
        f"code:in={VS}/versioned|1,{VS}/pressure",
        [*PRESSURE, "glu-g", "glu-mg", "glu-local"],
    ),
    (
        "Observation",
        f"code:not-in={VS}/pressure&code:not-in={VS}/glucose&subject=p-1",
        [
            "mass-ug",
            "mass-5",
            "mass-5.4",
            "mass-5.45",
            "mass-5350ug",
            "temp-c",
            "temp-f",
            "iu-l",
            "iu-ml",
            "covid",
            "urine",
            "dated",
        ],
    ),
]


@pytest.fixture(scope="module", params=DATABASES)
async def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    url = fresh_database_url(request, str(request.param), tmp_path_factory.mktemp("terms"))
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    for resource in CORPUS:
        await _store(engine, resource)
    yield engine
    await engine.dispose()


async def _both(
    engine: AsyncEngine,
    resource_type: str,
    query: str,
    narrowing: Narrowing | None = None,
    limits: SearchLimits | None = None,
) -> tuple[list[str], list[str]]:
    """(ids found by SQL, ids the in-memory matcher accepts, criteria expanded the same way)."""
    pairs = parse_qsl(query + "&_count=1000", keep_blank_values=True)
    request = parse_search(resource_type, pairs, limits=limits or SearchLimits())
    async with engine.connect() as conn:
        found = await run_search(conn, request, narrowing)
        criteria = await expand_criteria(conn, request.criteria, narrowing, request.limits)
    of_type = [r for r in CORPUS if r["resourceType"] == resource_type]
    return ids(found.resources), [r["id"] for r in of_type if matches(r, criteria)]


@pytest.mark.parametrize(("resource_type", "query", "expected"), CASES)
async def test_sql_and_in_memory_agree(
    engine: AsyncEngine, resource_type: str, query: str, expected: list[str]
) -> None:
    in_sql, in_memory = await _both(engine, resource_type, query)
    order = [r["id"] for r in CORPUS]
    assert in_memory == sorted(expected, key=order.index)
    assert sorted(in_sql) == sorted(expected)


async def test_quantities_sort_on_their_values_as_written(engine: AsyncEngine) -> None:
    found, _ = await _both(engine, "Observation", "code=mass&_sort=value-quantity")
    assert found == ["mass-5", "mass-5.4", "mass-5.45", "mass-5350ug", "mass-ug"]


async def test_a_union_parameter_sorts_on_the_values_of_both_levels(engine: AsyncEngine) -> None:
    """`combo-value-quantity` sorts on the least (greatest) of the Observation's own value and
    its components' values, as written: mixed's 5 mg is its own, its 110 a component's."""
    query = "combo-code=8480-6&_sort="
    found, _ = await _both(engine, "Observation", query + "combo-value-quantity")
    assert found == ["mixed", "bp-3", "bp-1", "bp-2"]  # 5, 10.7, 85, 95
    found, _ = await _both(engine, "Observation", query + "-combo-value-quantity")
    assert found == ["bp-1", "bp-2", "mixed", "bp-3"]  # 150, 118, 110, 16


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        (f"code:in={VS}/is-a", "filter[0] (property 'concept', op 'is-a') needs a terminology"),
        (f"code:in={VS}/all-loinc", "includes the whole code system http://loinc.org"),
        (f"code:in={VS}/loop", "includes itself"),
        (f"code:in={VS}/nowhere", f"ValueSet '{VS}/nowhere' is not known to this server"),
        ("code:in=ValueSet/nowhere", "ValueSet 'ValueSet/nowhere' is not known"),
        (f"code:in={VS}/versioned", "several ValueSets have the url"),
    ],
)
async def test_value_sets_that_cannot_be_expanded_are_refused_naming_them(
    engine: AsyncEngine, query: str, fragment: str
) -> None:
    with pytest.raises(InvalidSearch) as raised:
        await _both(engine, "Observation", query)
    assert fragment in raised.value.diagnostics
    assert raised.value.status == 400
    assert raised.value.expression == ["code:in"]


async def test_an_expansion_past_the_limit_is_too_costly(engine: AsyncEngine) -> None:
    tight = SearchLimits(max_valueset_codes=3)
    found, _ = await _both(engine, "Observation", f"code:in={VS}/pressure", limits=tight)
    assert found == PRESSURE
    with pytest.raises(SearchTooCostly) as raised:
        await _both(
            engine, "Observation", f"code:in={VS}/pressure&code:not-in={VS}/glucose", limits=tight
        )
    assert "HERALD_SEARCH_MAX_VALUESET_CODES" in raised.value.diagnostics


def _narrowing(scopes: str) -> Narrowing:
    access = Access(Principal("token", "u-1", Scopes.parse(scopes)))
    return Narrowing(access.reach("Observation", "r"), access)


async def test_a_value_set_the_reader_may_not_read_is_as_unknown(engine: AsyncEngine) -> None:
    query = f"code:in={VS}/pressure"
    readable = _narrowing("user/Observation.rs user/ValueSet.rs")
    assert (await _both(engine, "Observation", query, readable))[0] == PRESSURE
    with pytest.raises(InvalidSearch) as raised:
        await _both(engine, "Observation", query, _narrowing("user/Observation.rs"))
    assert f"ValueSet '{VS}/pressure' is not known to this server" in raised.value.diagnostics


@pytest.mark.parametrize(
    ("resource_type", "query", "fragment"),
    [
        ("Observation", "code-value-quantity=8480-6", "a composite value is 2 values joined by $"),
        ("Observation", "code-value-quantity=a$1$2", "a composite value is 2 values joined by $"),
        ("Observation", "code-value-concept=x$http://snomed.info/sct|", "after the $ a token"),
        ("Observation", "code-value-quantity=x$1|http://unitsofmeasure.org|", "unit is system"),
        ("Observation", "code-value-quantity=x$gtbig", "a quantity is [prefix]number"),
        ("Observation", "code-value-quantity:exact=x$1", "accepted: :missing"),
        ("MolecularSequence", "chromosome-variant-coordinate=1$2$3", "composite parameter is not"),
        ("Patient", "identifier:of-type=MR|12345", "`:of-type` takes [system]|code|value"),
        ("Patient", "identifier:of-type=a|MR|", "`:of-type` takes [system]|code|value"),
        ("Observation", "code:in=not-a-reference", "a ValueSet's canonical url or ValueSet/id"),
        ("Observation", "code:not-in=Patient/1", "a ValueSet's canonical url or ValueSet/id"),
        ("Observation", "value-quantity:in=x", "accepted: :missing"),
    ],
)
def test_bad_values_are_refused_naming_what_is_accepted(
    resource_type: str, query: str, fragment: str
) -> None:
    with pytest.raises(InvalidSearch) as raised:
        parse_search(resource_type, parse_qsl(query))
    assert fragment in raised.value.diagnostics
    assert raised.value.status == 400


def test_an_unexpanded_value_set_is_never_matched_silently() -> None:
    criteria = parse_search("Observation", [("code:in", f"{VS}/pressure")]).criteria
    observation: dict[str, Any] = CORPUS[0]
    with pytest.raises(InvalidSearch, match="was not expanded"):
        matches(observation, criteria)
