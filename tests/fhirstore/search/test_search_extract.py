"""Index extraction: what each FHIR data type puts in the search index."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhirstore.search import definitions as d
from fhirstore.search.extract import IndexEntry, _extractors, index_entries
from fhirstore.search.normalize import FAR_FUTURE, FAR_PAST, MAX_CODE
from fhirstore.search.unions import union_params
from tests.fhirstore.search.search_corpus import UCUM, corpus


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def entries(resource: dict[str, Any], param: str) -> list[IndexEntry]:
    return [entry for entry in index_entries(resource) if entry.param == param]


def test_codeable_concept_coding_and_text() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
                {"system": "http://snomed.info/sct", "code": "364075005"},
            ],
            "text": "Pulse",
        },
    }
    assert entries(observation, "code") == [
        IndexEntry("code", system="http://loinc.org", code="8867-4", text="heart rate"),
        IndexEntry("code", system="http://snomed.info/sct", code="364075005"),
        IndexEntry("code", text="pulse"),
    ]
    assert entries(observation, "status") == [IndexEntry("status", code="final")]


def test_identifier_contact_point_boolean_and_id() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "active": False,
        "identifier": [
            {"system": "urn:mrn", "value": "42", "type": {"text": "Medical Record"}},
        ],
        "telecom": [{"system": "phone", "value": "555-0101"}, {"system": "email", "value": "a@b"}],
    }
    assert entries(patient, "_id") == [IndexEntry("_id", code="p1")]
    assert entries(patient, "active") == [IndexEntry("active", code="false")]
    assert entries(patient, "identifier") == [
        IndexEntry("identifier", system="urn:mrn", code="42", text="medical record")
    ]
    assert entries(patient, "phone") == [IndexEntry("phone", system="phone", code="555-0101")]
    assert entries(patient, "email") == [IndexEntry("email", system="email", code="a@b")]
    assert len(entries(patient, "telecom")) == 2


def test_human_name_and_address_are_normalised_strings() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Müller", "given": ["Jöhn", "Quincy"], "prefix": ["Dr."]}],
        "address": [{"line": ["1  Main St"], "city": "São Paulo"}],
    }
    names = {(e.code, e.text) for e in entries(patient, "name")}
    assert names == {
        ("Müller", "muller"),
        ("Jöhn", "john"),
        ("Quincy", "quincy"),
        ("Dr.", "dr."),
        ("Jöhn Quincy Müller", "john quincy muller"),
    }
    assert {e.text for e in entries(patient, "address")} == {"1 main st", "sao paulo"}
    assert entries(patient, "address-city") == [
        IndexEntry("address-city", code="São Paulo", text="sao paulo")
    ]


def test_references_relative_absolute_versioned_contained() -> None:
    observation = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/p1/_history/3"},
        "performer": [
            {"reference": "https://example.org/fhir/Practitioner/9"},
            {"reference": "#contained-1"},
            {"display": "just a name"},
        ],
        "basedOn": [{"reference": "urn:uuid:0b1a6b3e-8c3f-4b8f-9c51-2a8f1b7d9e10"}],
    }
    assert entries(observation, "subject") == [
        IndexEntry("subject", system="Patient", code="Patient/p1")
    ]
    assert entries(observation, "patient") == [
        IndexEntry("patient", system="Patient", code="Patient/p1")
    ]
    assert entries(observation, "performer") == [
        IndexEntry(
            "performer", system="Practitioner", code="https://example.org/fhir/Practitioner/9"
        )
    ]
    assert entries(observation, "based-on") == [
        IndexEntry("based-on", code="urn:uuid:0b1a6b3e-8c3f-4b8f-9c51-2a8f1b7d9e10")
    ]


def test_where_resolve_keeps_only_the_named_type() -> None:
    observation = {"resourceType": "Observation", "subject": {"reference": "Group/g1"}}
    assert entries(observation, "patient") == []
    assert entries(observation, "subject") == [
        IndexEntry("subject", system="Group", code="Group/g1")
    ]


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("1970", "1970-01-01T00:00:00", "1970-12-31T23:59:59.999"),
        ("1985-02", "1985-02-01T00:00:00", "1985-02-28T23:59:59.999"),
        ("2024-02", "2024-02-01T00:00:00", "2024-02-29T23:59:59.999"),
        ("2001-12-31", "2001-12-31T00:00:00", "2001-12-31T23:59:59.999"),
    ],
)
def test_partial_dates_cover_their_whole_period(value: str, low: str, high: str) -> None:
    patient = {"resourceType": "Patient", "birthDate": value}
    [entry] = entries(patient, "birthdate")
    assert (entry.low, entry.high) == (_epoch(low), pytest.approx(_epoch(high)))


def test_date_times_instants_periods_and_timings() -> None:
    observation = {
        "resourceType": "Observation",
        "effectiveDateTime": "2024-03-01T10:15:00+01:00",
        "meta": {"lastUpdated": "2024-03-01T09:20:00.123Z"},
        "issued": "2024-03-01T09:20:00",  # no time zone: read as UTC
    }
    [effective] = entries(observation, "date")
    assert effective.low == _epoch("2024-03-01T09:15:00")
    assert effective.high == pytest.approx(_epoch("2024-03-01T09:15:00.999"))
    [updated] = entries(observation, "_lastUpdated")
    assert updated.low == updated.high == pytest.approx(_epoch("2024-03-01T09:20:00.123"))
    encounter = {"resourceType": "Encounter", "period": {"start": "2024-02-20"}}
    [period] = entries(encounter, "date")
    assert (period.low, period.high) == (_epoch("2024-02-20T00:00:00"), FAR_FUTURE)
    plan = {
        "resourceType": "CarePlan",
        "activity": [
            {"detail": {"scheduledTiming": {"event": ["2024-05-01", "2024-05-08T09:00:00Z"]}}},
            {"detail": {"scheduledPeriod": {"end": "2024-06"}}},
            {"detail": {"scheduledString": "every morning"}},
        ],
    }
    dates = [(e.low, e.high) for e in entries(plan, "activity-date")]
    assert dates == [
        (_epoch("2024-05-01T00:00:00"), pytest.approx(_epoch("2024-05-01T23:59:59.999"))),
        (_epoch("2024-05-08T09:00:00"), pytest.approx(_epoch("2024-05-08T09:00:00.999"))),
        (FAR_PAST, pytest.approx(_epoch("2024-06-30T23:59:59.999"))),
    ]


def test_quantities_age_money_range_and_numbers() -> None:
    observation = {
        "resourceType": "Observation",
        "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
    }
    assert entries(observation, "value-quantity") == [
        IndexEntry("value-quantity", system=UCUM, code="mmol/L", low=5.4, high=5.4),
        # the same in base units (mol/m3), for comparing across UCUM units
        IndexEntry("value-quantity", text="=[length]-3.[substance]", low=5.4, high=5.4),
    ]
    condition = {"resourceType": "Condition", "onsetAge": {"value": 45, "unit": "yr"}}
    assert entries(condition, "onset-age") == [
        IndexEntry("onset-age", code="yr", low=45.0, high=45.0)
    ]
    invoice = {"resourceType": "Invoice", "totalGross": {"value": 12.5, "currency": "EUR"}}
    assert entries(invoice, "totalgross") == [
        IndexEntry("totalgross", system="urn:iso:std:iso:4217", code="EUR", low=12.5, high=12.5)
    ]
    definition = {
        "resourceType": "ActivityDefinition",
        "useContext": [
            {
                "code": {"code": "age"},
                "valueRange": {"low": {"value": 18, "system": UCUM, "code": "a"}},
            }
        ],
    }
    assert entries(definition, "context-quantity") == [
        IndexEntry("context-quantity", system=UCUM, code="a", low=18.0, high=FAR_FUTURE),
        IndexEntry("context-quantity", text="=[time]", low=568036800.0, high=FAR_FUTURE),
    ]
    risk = {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]}
    assert entries(risk, "probability") == [IndexEntry("probability", low=0.25, high=0.25)]


def test_uris_and_canonicals() -> None:
    value_set = {
        "resourceType": "ValueSet",
        "url": "http://acme.org/fhir/ValueSet/bp",
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/shareablevalueset"]},
    }
    assert entries(value_set, "url") == [IndexEntry("url", code="http://acme.org/fhir/ValueSet/bp")]
    assert entries(value_set, "_profile") == [
        IndexEntry("_profile", code="http://hl7.org/fhir/StructureDefinition/shareablevalueset")
    ]


def test_bad_values_are_skipped_and_long_values_clipped() -> None:
    patient = {
        "resourceType": "Patient",
        "birthDate": "not-a-date",
        "name": [{"family": "x" * 2000}],
    }
    assert entries(patient, "birthdate") == []
    [family] = entries(patient, "family")
    assert family.code is not None and len(family.code) == MAX_CODE
    assert index_entries({"no": "resourceType"}) == []
    assert index_entries({"resourceType": "NotAType", "id": "1"}) == []


def test_entries_are_deduplicated() -> None:
    observation = {
        "resourceType": "Observation",
        "category": [
            {"coding": [{"system": "http://example.org/c", "code": "vital-signs"}]},
            {"coding": [{"system": "http://example.org/c", "code": "vital-signs"}]},
        ],
    }
    assert entries(observation, "category") == [
        IndexEntry("category", system="http://example.org/c", code="vital-signs")
    ]


def test_union_parameters_write_no_rows_their_members_do() -> None:
    """Observation's `combo-*` are the unions of other parameters (checked against the R4B
    expressions); they write nothing, their members write the rows they are answered from."""
    assert union_params("Observation") == {
        "combo-code": ("code", "component-code"),
        "combo-code-value-concept": ("code-value-concept", "component-code-value-concept"),
        "combo-code-value-quantity": ("code-value-quantity", "component-code-value-quantity"),
        "combo-data-absent-reason": ("component-data-absent-reason", "data-absent-reason"),
        "combo-value-concept": ("component-value-concept", "value-concept"),
        "combo-value-quantity": ("component-value-quantity", "value-quantity"),
    }
    assert all(not union_params(t) for t in d.resource_types() if t != "Observation")
    observation = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "system": UCUM, "code": "mm[Hg]"},
            }
        ],
    }
    params = {entry.param for entry in index_entries(observation)}
    assert not any(param.startswith("combo-") for param in params)
    assert {"code", "component-code", "component-code-value-quantity"} <= params


@pytest.mark.parametrize("resource", corpus(), ids=lambda r: f"{r['resourceType']}/{r['id']}")
def test_direct_paths_agree_with_fhirpathpy(resource: dict[str, Any]) -> None:
    """The fast plain-path walker yields the same entries as the FHIRPath engine."""
    for extractor in _extractors(resource["resourceType"]):
        if extractor.plain is None:
            continue
        fast = set(extractor.entries(resource))
        assert fast == set(extractor.engine_entries(resource)), extractor.expression


def test_direct_paths_agree_with_fhirpathpy_on_the_core_package(r4b_core_package: Path) -> None:
    checked = 0
    for path in sorted(r4b_core_package.glob("*.json"))[::5]:
        resource = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue
        index_entries(resource)  # never raises
        for extractor in _extractors(resource["resourceType"]):
            if extractor.plain is not None:
                fast = set(extractor.entries(resource))
                engine = set(extractor.engine_entries(resource))
                assert fast == engine, (path.name, extractor.code)
                checked += 1
    assert checked > 1000


def test_expressions_that_are_not_empty_on_absent_elements_still_run() -> None:
    """`Patient.deceased.exists() and ...` is false for a Patient without `deceased`."""
    assert entries({"resourceType": "Patient"}, "deceased") == [
        IndexEntry("deceased", code="false")
    ]
    assert entries({"resourceType": "Patient", "deceasedBoolean": True}, "deceased") == [
        IndexEntry("deceased", code="true")
    ]
    dead = {"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}
    assert entries(dead, "deceased") == [IndexEntry("deceased", code="true")]


def test_malformed_values_never_fail_indexing() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": 42, "value": "x"}, "not-an-object"],
        "name": [{"family": ["not", "a", "string"]}],
        "telecom": 7,
        "birthDate": 1970,
    }
    found = index_entries(patient)
    assert IndexEntry("_id", code="p1") in found
    assert IndexEntry("identifier", code="x") in found
