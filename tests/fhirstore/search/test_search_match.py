"""In-memory matching (the subscription filter path) against a small realistic corpus.

`MATCH_CASES` is also replayed against SQLite and PostgreSQL by test_search_sql.py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhirstore.search.extract import index_entries
from fhirstore.search.match import group_entries, matches, matches_entries
from fhirstore.search.query import Criterion, parse_search
from tests.fhirstore.search.search_corpus import corpus

CORPUS = corpus()

# (resource type, query, ids expected, in corpus order). `+` must be sent as %2B.
MATCH_CASES: list[tuple[str, str, list[str]]] = [
    # string: prefix, case and accent insensitive; :exact; :contains
    ("Patient", "name=eve", ["pat-2", "pat-4"]),
    ("Patient", "name:contains=eve", ["pat-2", "pat-3", "pat-4"]),
    ("Patient", "name:contains=ON", ["pat-5"]),
    ("Patient", "name:exact=Eve", ["pat-2"]),
    ("Patient", "name:exact=eve", []),
    ("Patient", "family=smith", ["pat-2", "pat-5"]),
    ("Patient", "family:exact=Smith", ["pat-2"]),
    ("Patient", "given=JO", ["pat-1"]),
    ("Patient", "name=séverine", ["pat-3"]),
    ("Patient", "name=severine o'neil", ["pat-3"]),
    ("Patient", "name=john quincy m", ["pat-1"]),
    ("Patient", "address-city=spring", ["pat-1"]),
    ("Patient", "address=us", ["pat-1", "pat-2"]),
    ("Organization", "name=spring", ["org-1"]),
    # token: code, system|code, |code, system|; :not; :text; :missing
    ("Patient", "gender=female", ["pat-2", "pat-3"]),
    ("Patient", "gender:not=male", ["pat-2", "pat-3", "pat-4"]),
    ("Patient", "gender:not=male,female", ["pat-4"]),
    ("Patient", "active:not=true", ["pat-2", "pat-3", "pat-5"]),
    ("Patient", "active=true", ["pat-1", "pat-4"]),
    ("Patient", "identifier=MRN-001", ["pat-1", "pat-3"]),
    ("Patient", "identifier=http://hospital.example.org/mrn|MRN-001", ["pat-1"]),
    ("Patient", "identifier=http://hospital.example.org/mrn|", ["pat-1", "pat-2"]),
    ("Patient", "identifier=|NOSYS-9", ["pat-2"]),
    ("Patient", "identifier=|MRN-001", []),
    ("Patient", "phone=%2B1 555 0101", ["pat-1"]),
    ("Patient", "email:missing=false", ["pat-1"]),
    ("Patient", "email:missing=true", ["pat-2", "pat-3", "pat-4", "pat-5"]),
    ("Patient", "deceased=true", ["pat-3"]),
    ("Patient", "deceased=false", ["pat-1", "pat-2", "pat-4", "pat-5"]),  # not known deceased
    ("Patient", "_tag=http://example.org/tags|vip", ["pat-4"]),
    ("Patient", "_id=pat-1,pat-3", ["pat-1", "pat-3"]),
    ("Observation", "code=8867-4", ["obs-1", "obs-2"]),
    (
        "Observation",
        "code=http://loinc.org|8867-4,http://loinc.org|2339-0",
        ["obs-1", "obs-2", "obs-3", "obs-4"],
    ),
    ("Observation", "code:text=glucose", ["obs-3", "obs-4"]),
    ("Observation", "code:text=blood", ["obs-3", "obs-4", "obs-6"]),
    ("Observation", "code:text=pressure pan", ["obs-6"]),
    ("Patient", "name:text=quincy", ["pat-1"]),
    ("Patient", "name:text=uincy", []),
    (
        "Observation",
        "code:not=http://loinc.org|8867-4",
        ["obs-3", "obs-4", "obs-5", "obs-6", "obs-7"],
    ),
    ("Observation", "status:not=final", ["obs-2", "obs-5"]),
    ("Observation", "_tag:not=lab", ["obs-1", "obs-2", "obs-3", "obs-4", "obs-5", "obs-6"]),
    ("Observation", "value-concept:text=neg", ["obs-7"]),
    ("Observation", "combo-code=8480-6", ["obs-6"]),
    ("Condition", "code:text=type", ["cond-1"]),
    ("Encounter", "class=AMB", ["enc-1"]),
    # date: partial dates are ranges; prefixes compare ranges
    ("Patient", "birthdate=1985", ["pat-2"]),
    ("Patient", "birthdate=1985-06-15", []),
    ("Patient", "birthdate=gt1985-06-15", ["pat-2", "pat-3", "pat-5"]),
    ("Patient", "birthdate=lt1985-06-15", ["pat-1", "pat-2"]),
    ("Patient", "birthdate=ge1985-06", ["pat-2", "pat-3", "pat-5"]),
    ("Patient", "birthdate=le1985", ["pat-1", "pat-2"]),
    ("Patient", "birthdate=sa1985", ["pat-3", "pat-5"]),
    ("Patient", "birthdate=eb1985-06-01", ["pat-1"]),
    ("Patient", "birthdate=ne1990", ["pat-1", "pat-2", "pat-5"]),
    ("Patient", "birthdate:missing=true", ["pat-4"]),
    ("Patient", "death-date=2023-11-05T13:30:00Z", ["pat-3"]),
    ("Patient", "_lastUpdated=gt2024-01-01T00:02:00Z", ["pat-4", "pat-5"]),
    ("Patient", "_lastUpdated=2024-01-01T00:03", ["pat-4"]),
    ("Observation", "date=2024-03-01", ["obs-1"]),
    ("Observation", "date=2024-03", ["obs-1", "obs-2"]),
    ("Observation", "date=gt2024-03-01", ["obs-2"]),
    ("Observation", "date=lt2024-03-01", ["obs-3", "obs-4", "obs-6"]),
    ("Observation", "date=2023", ["obs-4"]),
    ("Observation", "date=sa2024-01-01", ["obs-1", "obs-2", "obs-3", "obs-6"]),
    ("Observation", "date=eb2024-01-15T07:00:00Z", ["obs-4", "obs-6"]),
    ("Observation", "date:missing=true", ["obs-5", "obs-7"]),
    ("Encounter", "date=2024-03-01", ["enc-1"]),
    ("Encounter", "date=ge2030-01-01", ["enc-2"]),
    ("Encounter", "date=2024-02-25", []),
    ("Condition", "onset-date=2020", ["cond-2"]),
    ("Condition", "recorded-date=2015-04-10", []),
    # quantity / number: implicit precision of the search value
    ("Observation", "value-quantity=72", ["obs-1"]),
    ("Observation", "value-quantity=100", ["obs-2", "obs-4"]),
    ("Observation", "value-quantity=100.0", ["obs-2"]),
    ("Observation", "value-quantity=5.40", ["obs-3"]),
    ("Observation", "value-quantity=gt72", ["obs-2", "obs-4"]),
    ("Observation", "value-quantity=ge72", ["obs-1", "obs-2", "obs-4"]),
    ("Observation", "value-quantity=lt100", ["obs-1", "obs-3", "obs-4"]),
    ("Observation", "value-quantity=ne72", ["obs-2", "obs-3", "obs-4"]),
    ("Observation", "value-quantity=ap95", ["obs-2", "obs-4"]),
    ("Observation", "value-quantity=5.4|http://unitsofmeasure.org|mmol/L", ["obs-3"]),
    ("Observation", "value-quantity=5.4||mg/dL", []),
    ("Observation", "value-quantity=ge99||mg/dL", ["obs-4"]),
    ("Observation", "component-value-quantity=gt100", ["obs-6"]),
    # quantity units compared through UCUM (99.5 mg/dL is 0.0995 g/dL)
    ("Observation", "value-quantity=0.0995|http://unitsofmeasure.org|g/dL", ["obs-4"]),
    ("Observation", "value-quantity=0.0995||g/dL", []),
    # composite: the code and the value of the same component
    ("Observation", "component-code-value-quantity=http://loinc.org|8480-6$gt100", ["obs-6"]),
    ("Observation", "component-code-value-quantity=8462-4$gt100", []),
    ("Observation", "code-value-quantity=8867-4$gt80||/min", ["obs-2"]),
    ("Condition", "onset-age=gt40||a", ["cond-1"]),
    # reference: Type/id, id, absolute URL, :Type, resolve() is Patient
    ("Observation", "subject=Patient/pat-1", ["obs-1", "obs-2"]),
    ("Observation", "subject=pat-2", ["obs-3"]),
    ("Observation", "patient=pat-1", ["obs-1", "obs-2"]),
    ("Observation", "patient:missing=true", ["obs-7"]),
    ("Observation", "subject:Group=grp-1", ["obs-7"]),
    ("Observation", "subject=https://other.example.org/fhir/Patient/77", ["obs-5"]),
    ("Observation", "performer:Practitioner=prac-1", ["obs-1", "obs-3"]),
    ("Observation", "encounter:missing=false", ["obs-1"]),
    ("Patient", "organization=Organization/org-1", ["pat-1"]),
    ("Patient", "organization:missing=true", ["pat-3", "pat-4"]),
    ("Patient", "link=Patient/pat-3", ["pat-2"]),
    ("Provenance", "target=Observation/obs-1", ["prov-1", "prov-2"]),
    # uri: exact, :below, :above, :contains
    ("ValueSet", "url=http://acme.org/fhir/ValueSet/Blood_Pressure", ["vs-1"]),
    ("ValueSet", "url=http://acme.org/fhir/ValueSet/blood_pressure", []),
    ("ValueSet", "url:below=http://acme.org/fhir/ValueSet/blood_pressure", ["vs-2"]),
    ("ValueSet", "url:above=http://acme.org/fhir/ValueSet/blood_pressure/child/x", ["vs-2"]),
    ("ValueSet", "url:contains=BLOOD_", ["vs-1", "vs-2"]),
    ("ValueSet", "url:below=http://acme.org/fhir/ValueSet", ["vs-1", "vs-2"]),
    ("ValueSet", "url:below=http://acme.org/fhir/ValueSet/blood", []),  # whole segments only
    ("ValueSet", "url:above=http://acme.org/fhir/ValueSet/blood_pressure", []),
    # AND (repeated) and OR (comma)
    ("Patient", "family=smith&gender=female", ["pat-2"]),
    ("Patient", "family=smith,evans", ["pat-2", "pat-4", "pat-5"]),
    ("Patient", "gender=male&gender=female", []),
    ("Observation", "code=8867-4&value-quantity=gt80&status=amended,final", ["obs-2"]),
]


def criteria(resource_type: str, query: str) -> list[Criterion]:
    return parse_search(resource_type, parse_qsl(query, keep_blank_values=True)).criteria


def matching_ids(resource_type: str, query: str) -> list[str]:
    found = criteria(resource_type, query)
    return [r["id"] for r in CORPUS if r["resourceType"] == resource_type and matches(r, found)]


@pytest.mark.parametrize(("resource_type", "query", "expected"), MATCH_CASES)
def test_matches(resource_type: str, query: str, expected: list[str]) -> None:
    assert matching_ids(resource_type, query) == expected


def test_precomputed_entries_give_the_same_answer() -> None:
    patient: dict[str, Any] = next(r for r in CORPUS if r["id"] == "pat-1")
    entries = index_entries(patient)
    groups = group_entries(entries)
    for query, expected in [("name=john", True), ("gender:not=male", False), ("", True)]:
        found = criteria("Patient", query)
        assert matches_entries(entries, found) is expected
        assert matches_entries(groups, found) is expected


def test_criterion_built_by_hand_with_a_list_of_values() -> None:
    [parsed] = criteria("Task", "status=ready,requested")
    criterion = Criterion(parsed.param, None, list(parsed.values))  # type: ignore[arg-type]
    task = {"resourceType": "Task", "status": "ready", "for": {"reference": "Patient/p1"}}
    assert matches(task, [criterion])
    assert matches(task, criteria("Task", "patient=p1&status=ready"))
    assert not matches(dict(task, status="completed"), [criterion])
