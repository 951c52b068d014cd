"""The committed R4B search-parameter table and the script that builds it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from fhirstore.search import build_table
from fhirstore.search.definitions import (
    TABLE,
    SearchParam,
    patient_compartment_params,
    resource_types,
    search_params,
)

# Where `npm pack hl7.fhir.r4b.core@4.3.0` was unpacked (or the .tgz itself), if anywhere.


def test_concrete_resource_types_only() -> None:
    types = resource_types()
    assert {"Patient", "Observation", "Task", "CarePlan", "Subscription", "Bundle"} <= types
    assert {"Resource", "DomainResource", "MetadataResource"}.isdisjoint(types)
    assert len(types) == 141


def test_params_of_a_type_include_the_common_ones() -> None:
    params = search_params("Patient")
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} <= set(params)
    assert params["name"] == SearchParam("name", "string", "Patient.name")
    assert params["general-practitioner"].targets == (
        "Organization",
        "Practitioner",
        "PractitionerRole",
    )
    assert params["_lastUpdated"].type == "date"
    assert search_params("Patient") is params  # loaded once


def test_union_expressions_are_restricted_to_the_type() -> None:
    assert search_params("Observation")["patient"].expression == (
        "Observation.subject.where(resolve() is Patient)"
    )
    assert search_params("Task")["patient"].targets == ("Patient",)
    assert search_params("InsurancePlan")["name"].expression == (
        "InsurancePlan.name | InsurancePlan.alias"
    )


def test_unknown_type_has_no_params() -> None:
    assert dict(search_params("Banana")) == {}


def test_patient_compartment() -> None:
    assert patient_compartment_params("Observation") == ("subject", "performer")
    assert patient_compartment_params("Patient") == ("link",)
    assert "patient" in patient_compartment_params("AllergyIntolerance")
    assert patient_compartment_params("Organization") == ()


def test_split_union_respects_parentheses_and_quotes() -> None:
    expression = "(A.value as Quantity) | A.x.where(y = 'a|b') | B.z"
    assert build_table.split_union(expression) == [
        "(A.value as Quantity)",
        "A.x.where(y = 'a|b')",
        "B.z",
    ]
    assert build_table.restrict(expression, "B", ["A", "B"]) == "B.z"
    assert build_table.restrict("name | alias", "X", ["X"]) == "X.name | X.alias"


def test_committed_table_matches_a_rebuild(r4b_core_package: Path) -> None:
    committed = json.loads(gzip.decompress(TABLE.read_bytes()))
    assert build_table.build(r4b_core_package) == committed
