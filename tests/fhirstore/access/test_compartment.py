"""The Patient compartment: which resources a patient-scoped token may see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirstore.access.compartment import (
    compartment_params,
    in_patient_compartment,
    is_compartment_type,
)


def observation(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **elements}


def ref(reference: str) -> dict[str, str]:
    return {"reference": reference}


def test_observation_by_subject() -> None:
    assert in_patient_compartment(observation(subject=ref("Patient/p1")), "p1")
    assert not in_patient_compartment(observation(subject=ref("Patient/p1")), "p2")
    assert not in_patient_compartment(observation(subject=ref("Patient/p10")), "p1")


def test_observation_by_performer() -> None:
    measured_by_herself = observation(
        subject=ref("Group/g1"), performer=[ref("Practitioner/dr"), ref("Patient/p1")]
    )
    assert in_patient_compartment(measured_by_herself, "p1")
    assert not in_patient_compartment(observation(performer=[ref("Practitioner/p1")]), "p1")


def test_a_reference_to_another_type_with_the_same_id_does_not_count() -> None:
    assert not in_patient_compartment(observation(subject=ref("Group/p1")), "p1")
    assert not in_patient_compartment(observation(focus=[ref("Patient/p1")]), "p1")  # not listed


def test_encounter_by_patient() -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": ref("Patient/p1"),
    }
    assert compartment_params("Encounter") == ("patient",)
    assert in_patient_compartment(encounter, "p1")
    assert not in_patient_compartment({**encounter, "subject": ref("Patient/p2")}, "p1")


def test_a_patient_is_in_its_own_compartment_only() -> None:
    assert is_compartment_type("Patient")
    assert compartment_params("Patient") == ()
    assert in_patient_compartment({"resourceType": "Patient", "id": "p1"}, "p1")
    assert not in_patient_compartment({"resourceType": "Patient", "id": "p2"}, "p1")
    assert not in_patient_compartment({"resourceType": "Patient"}, "p1")
    linked = {
        "resourceType": "Patient",
        "id": "p2",
        "link": [{"other": ref("Patient/p1"), "type": "seealso"}],
    }
    assert not in_patient_compartment(linked, "p1")  # `link` is left out on purpose


def test_a_type_outside_the_compartment_is_never_in() -> None:
    organization = {"resourceType": "Organization", "id": "p1", "partOf": ref("Patient/p1")}
    assert not is_compartment_type("Organization")
    assert compartment_params("Organization") == ()
    assert not in_patient_compartment(organization, "p1")
    assert not is_compartment_type("Subscription")
    banana = {"resourceType": "Banana", "subject": ref("Patient/p1")}
    assert not in_patient_compartment(banana, "p1")
    assert not in_patient_compartment({"subject": ref("Patient/p1")}, "p1")  # no resourceType


def test_a_reminder_task_is_in_its_patients_compartment() -> None:
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": ref("Patient/p1"),
    }
    assert compartment_params("Task") == ("patient",)
    assert is_compartment_type("Task")
    assert in_patient_compartment(task, "p1")
    assert not in_patient_compartment(task, "p2")
    assert not in_patient_compartment({**task, "for": ref("Group/p1")}, "p1")


def test_careplan_by_patient_or_performer() -> None:
    assert compartment_params("CarePlan") == ("patient", "performer")
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan"}
    assert in_patient_compartment({**plan, "subject": ref("Patient/p1")}, "p1")
    assert not in_patient_compartment({**plan, "subject": ref("Patient/p2")}, "p1")


def test_a_versioned_reference_counts() -> None:
    assert in_patient_compartment(observation(subject=ref("Patient/p1/_history/2")), "p1")


def test_an_absolute_reference_does_not_count() -> None:
    # The index keeps absolute references whole (a resource on some server), as do searches.
    assert not in_patient_compartment(observation(subject=ref("http://x/fhir/Patient/p1")), "p1")


@pytest.mark.parametrize("reference", ["#p1", "urn:uuid:p1", "p1"])
def test_contained_and_unresolved_references_do_not_count(reference: str) -> None:
    assert not in_patient_compartment(observation(subject=ref(reference)), "p1")


def test_the_official_definition_with_herald_s_additions(r4b_core_package: Path) -> None:
    path = r4b_core_package / "CompartmentDefinition-patient.json"
    definition = json.loads(path.read_text(encoding="utf-8"))
    assert definition["url"] == "http://hl7.org/fhir/CompartmentDefinition/patient"
    official = {entry["code"]: tuple(entry.get("param", ())) for entry in definition["resource"]}
    assert official["Task"] == ()  # why Herald adds Task through `patient`
    assert official["Patient"] == ("link",)  # left out: a Patient joins by its id
    for resource_type, params in official.items():
        if resource_type not in ("Task", "Patient"):
            assert compartment_params(resource_type) == params, resource_type
            assert is_compartment_type(resource_type) == bool(params), resource_type
