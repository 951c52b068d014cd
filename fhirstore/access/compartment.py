"""The Patient compartment: which resources belong to one patient, for patient-scoped access.

The official part is the FHIR R4B (4.3.0) CompartmentDefinition `patient`
(http://hl7.org/fhir/CompartmentDefinition/patient): per resource type, the reference search
parameters that put a resource in a Patient's compartment (Observation: `subject`, `performer`;
Encounter: `patient`; ...). It is not copied here: `fhirstore/search/build_table.py` already
turns `CompartmentDefinition-patient.json` of `hl7.fhir.r4b.core@4.3.0` into the
`patientCompartment` part of the committed search table (regenerate it there), and
`fhirstore.search.definitions.patient_compartment_params` reads it.

Herald's departures, on purpose:

- Task: R4B lists Task in the compartment without parameters, so no Task would ever be in a
  patient's compartment. Herald materialises reminder Tasks for patients (`Task.for` = the
  CarePlan's patient), which their apps must read, so Task joins through `patient`
  (`Task.for` when it refers to a Patient). Task is the only type Herald itself writes for a
  patient.
- Patient: a Patient is in its own compartment (by id). The definition's `link` parameter
  (other Patient records whose `link.other` names this one) is left out: a record would join
  a patient's compartment by a claim written in that other record, so a patient-scoped token
  sees its own Patient record only. `compartment_params("Patient")` is therefore `()`.

A reference counts when its index entry is `Patient/<id>`: relative references, versioned ones
(`Patient/p1/_history/2`) included. Absolute references (`https://other/fhir/Patient/p1`) do not:
the search index keeps them whole, as references to a resource on some server, and compartment
searches on the index must give the same answer as `in_patient_compartment`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhirstore.search.definitions import patient_compartment_params
from fhirstore.search.extract import index_entries

# Compartment parameters Herald adds to the official definition (see the module docstring).
_HERALD_ADDITIONS: dict[str, tuple[str, ...]] = {"Task": ("patient",)}
_PATIENT = "Patient/"


@cache
def compartment_params(resource_type: str) -> tuple[str, ...]:
    """The search parameters whose Patient reference puts a `resource_type` resource in that
    patient's compartment; `()` for types outside it and for Patient (joined by its id)."""
    if resource_type == "Patient":
        return ()
    official = patient_compartment_params(resource_type)
    added = tuple(p for p in _HERALD_ADDITIONS.get(resource_type, ()) if p not in official)
    return official + added


def is_compartment_type(resource_type: str) -> bool:
    """Whether resources of `resource_type` can be in a Patient's compartment at all."""
    return resource_type == "Patient" or bool(compartment_params(resource_type))


def in_patient_compartment(resource: dict[str, Any], patient_id: str) -> bool:
    """Whether `resource` is in the compartment of Patient `patient_id`."""
    return patient_id in compartment_patients(resource)


def compartment_patients(resource: dict[str, Any]) -> set[str]:
    """The ids of every Patient whose compartment `resource` is in (a resource may be in
    several: an Observation about one patient performed by another)."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return set()
    if resource_type == "Patient":
        resource_id = resource.get("id")
        return {resource_id} if isinstance(resource_id, str) else set()
    params = compartment_params(resource_type)
    return {
        entry.code.removeprefix(_PATIENT)
        for entry in (index_entries(resource) if params else ())
        if entry.param in params and entry.code and entry.code.startswith(_PATIENT)
    }
