"""A small, realistic corpus of R4B resources for the search tests (SQL and in-memory)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MRN = "http://hospital.example.org/mrn"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
START = datetime(2024, 1, 1, tzinfo=UTC)


def patients() -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Patient",
            "id": "pat-1",
            "identifier": [{"system": MRN, "value": "MRN-001"}],
            "active": True,
            "name": [{"use": "official", "family": "Müller", "given": ["Jöhn", "Quincy"]}],
            "telecom": [
                {"system": "phone", "value": "+1 555 0101", "use": "home"},
                {"system": "email", "value": "john.mueller@example.org"},
            ],
            "gender": "male",
            "birthDate": "1970-02-03",
            "address": [{"line": ["1 Main St"], "city": "Springfield", "country": "US"}],
            "managingOrganization": {"reference": "Organization/org-1"},
            "generalPractitioner": [{"reference": "Practitioner/prac-1"}],
        },
        {
            "resourceType": "Patient",
            "id": "pat-2",
            "identifier": [{"system": MRN, "value": "MRN-002"}, {"value": "NOSYS-9"}],
            "active": False,
            "name": [{"family": "Smith", "given": ["Eve", "Anne"], "prefix": ["Dr."]}],
            "gender": "female",
            "birthDate": "1985-06",
            "address": [{"city": "Shelbyville", "postalCode": "49001", "country": "US"}],
            "managingOrganization": {"reference": "Organization/org-2"},
            "link": [{"other": {"reference": "Patient/pat-3"}, "type": "seealso"}],
        },
        {
            "resourceType": "Patient",
            "id": "pat-3",
            "identifier": [{"system": "http://other.example.org/id", "value": "MRN-001"}],
            "name": [{"text": "Severine O'Neil", "family": "O'Neil", "given": ["Séverine"]}],
            "gender": "female",
            "birthDate": "1990",
            "deceasedDateTime": "2023-11-05T14:30:00+01:00",
            "telecom": [{"system": "phone", "value": "+44 20 7946 0000"}],
        },
        {
            "resourceType": "Patient",
            "id": "pat-4",
            "active": True,
            "name": [{"family": "Evans", "given": ["Evelyn"]}],
            "gender": "other",
            "meta": {"tag": [{"system": "http://example.org/tags", "code": "vip"}]},
        },
        {
            "resourceType": "Patient",
            "id": "pat-5",
            "name": [{"family": "Smithson", "given": ["Bob"]}],
            "gender": "male",
            "birthDate": "2001-12-31",
            "deceasedBoolean": False,
            "managingOrganization": {"reference": "https://other.example.org/fhir/Organization/9"},
        },
    ]


def others() -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Organization",
            "id": "org-1",
            "name": "Springfield General",
            "active": True,
        },
        {"resourceType": "Organization", "id": "org-2", "name": "Shelbyville Clinic"},
        {
            "resourceType": "Practitioner",
            "id": "prac-1",
            "name": [{"family": "House", "given": ["Gregory"]}],
        },
        {
            "resourceType": "Encounter",
            "id": "enc-1",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/pat-1"},
            "period": {"start": "2024-03-01T09:00:00Z", "end": "2024-03-01T10:30:00Z"},
        },
        {
            "resourceType": "Encounter",
            "id": "enc-2",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": "Patient/pat-2"},
            "period": {"start": "2024-02-20"},
        },
        {
            "resourceType": "Condition",
            "id": "cond-1",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": {"text": "Type 2 diabetes"},
            "subject": {"reference": "Patient/pat-1"},
            "onsetAge": {"value": 45, "unit": "yr", "system": UCUM, "code": "a"},
            "recordedDate": "2015-04",
        },
        {
            "resourceType": "Condition",
            "id": "cond-2",
            "code": {
                "coding": [{"system": "http://snomed.info/sct", "code": "38341003"}],
                "text": "Hypertension",
            },
            "subject": {"reference": "Patient/pat-2"},
            "onsetDateTime": "2020-03-15",
        },
        {
            "resourceType": "ValueSet",
            "id": "vs-1",
            "url": "http://acme.org/fhir/ValueSet/Blood_Pressure",
            "status": "active",
        },
        {
            "resourceType": "ValueSet",
            "id": "vs-2",
            "url": "http://acme.org/fhir/ValueSet/blood_pressure/child",
            "status": "draft",
        },
    ]


def _observation(ident: str, patient: str, code: str, display: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": extra.pop("status", "final"),
        "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": patient},
        **extra,
    }


def observations() -> list[dict[str, Any]]:
    heart = ("8867-4", "Heart rate")
    glucose = ("2339-0", "Glucose [Mass/volume] in Blood")
    return [
        _observation(
            "obs-1",
            "Patient/pat-1",
            *heart,
            effectiveDateTime="2024-03-01T09:15:00Z",
            valueQuantity={"value": 72, "unit": "beats/min", "system": UCUM, "code": "/min"},
            performer=[{"reference": "Practitioner/prac-1"}],
            encounter={"reference": "Encounter/enc-1"},
        ),
        _observation(
            "obs-2",
            "Patient/pat-1",
            *heart,
            effectiveDateTime="2024-03-02",
            valueQuantity={"value": 100, "unit": "beats/min", "system": UCUM, "code": "/min"},
            status="amended",
        ),
        _observation(
            "obs-3",
            "Patient/pat-2",
            *glucose,
            effectivePeriod={"start": "2024-02-28T23:00:00-05:00", "end": "2024-03-01T01:00:00Z"},
            valueQuantity={"value": 5.4, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
            performer=[{"reference": "Practitioner/prac-1"}, {"reference": "Patient/pat-2"}],
        ),
        _observation(
            "obs-4",
            "Patient/pat-3",
            *glucose,
            effectiveDateTime="2023-12",
            valueQuantity={"value": 99.5, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
        ),
        _observation(
            "obs-5",
            "https://other.example.org/fhir/Patient/77",
            "8302-2",
            "Body height",
            valueString="about 180 cm",
            status="preliminary",
        ),
        _observation(
            "obs-6",
            "Patient/pat-4",
            "85354-9",
            "Blood pressure panel",
            effectiveDateTime="2024-01-15T08:00:00+02:00",
            component=[
                {
                    "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                    "valueQuantity": {"value": 120, "system": UCUM, "code": "mm[Hg]"},
                },
                {
                    "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                    "valueQuantity": {"value": 80, "system": UCUM, "code": "mm[Hg]"},
                },
            ],
        ),
        _observation(
            "obs-7",
            "Group/grp-1",
            "94500-6",
            "SARS-CoV-2 RNA",
            valueCodeableConcept={
                "coding": [{"system": "http://snomed.info/sct", "code": "260385009"}],
                "text": "Negative",
            },
            meta={"tag": [{"system": "http://example.org/tags", "code": "lab"}]},
        ),
    ]


def provenances() -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Provenance",
            "id": "prov-1",
            "target": [{"reference": "Observation/obs-1"}, {"reference": "Observation/obs-3"}],
            "recorded": "2024-03-01T09:20:00Z",
            "agent": [{"who": {"reference": "Practitioner/prac-1"}}],
        },
        {
            "resourceType": "Provenance",
            "id": "prov-2",
            "target": [{"reference": "Observation/obs-1"}],
            "recorded": "2024-03-01T09:25:00Z",
            "agent": [{"who": {"reference": "Organization/org-1"}}],
        },
    ]


def corpus() -> list[dict[str, Any]]:
    """Every resource, each with `meta.lastUpdated` set one minute apart (as the store does)."""
    resources = [*patients(), *others(), *observations(), *provenances()]
    for index, resource in enumerate(resources):
        meta = resource.setdefault("meta", {})
        meta["lastUpdated"] = (START + timedelta(minutes=index)).isoformat().replace("+00:00", "Z")
    return resources


# Stored, then deleted: searches must never return it.
DELETED = {
    "resourceType": "Patient",
    "id": "pat-deleted",
    "name": [{"family": "Smith", "given": ["Ghost"]}],
    "gender": "male",
    "meta": {"lastUpdated": "2024-06-01T00:00:00Z"},
}
