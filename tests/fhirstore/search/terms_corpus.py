"""Resources for the composite, UCUM, `:of-type` and `:in` / `:not-in` search tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MRN = "http://hospital.example.org/mrn"
VS = "http://example.org/fhir/ValueSet"
DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
SYSTOLIC, DIASTOLIC, PANEL, GLUCOSE = "8480-6", "8462-4", "85354-9", "2339-0"
START = datetime(2024, 1, 1, tzinfo=UTC)


def _coded(code: str, system: str = LOINC) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _quantity(value: float, code: str, system: str = UCUM) -> dict[str, Any]:
    return {"value": value, "system": system, "code": code}


def _observation(ident: str, code: str, **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "code": _coded(code),
        "subject": {"reference": "Patient/p-1"},
        **value,
    }


def _pressure(ident: str, systolic: dict[str, Any], diastolic: dict[str, Any]) -> dict[str, Any]:
    return _observation(
        ident,
        PANEL,
        component=[
            {"code": _coded(SYSTOLIC), "valueQuantity": systolic},
            {"code": _coded(DIASTOLIC), "valueQuantity": diastolic},
        ],
    )


def observations() -> list[dict[str, Any]]:
    return [
        _pressure("bp-1", _quantity(150, "mm[Hg]"), _quantity(85, "mm[Hg]")),
        _pressure("bp-2", _quantity(118, "mm[Hg]"), _quantity(95, "mm[Hg]")),
        # 16 kPa is 120.01 mm[Hg]; 10.7 kPa 80.26 mm[Hg]
        _pressure("bp-3", _quantity(16, "kPa"), _quantity(10.7, "kPa")),
        _observation("glu-g", GLUCOSE, valueQuantity=_quantity(0.1, "g/dL")),
        _observation("glu-mg", GLUCOSE, valueQuantity=_quantity(99.5, "mg/dL")),
        _observation(
            "glu-local", GLUCOSE, valueQuantity=_quantity(100, "mg/dL", "http://example.org/units")
        ),
        _observation("mass-ug", "mass", valueQuantity=_quantity(6000, "ug")),
        _observation("mass-5", "mass", valueQuantity=_quantity(5, "mg")),
        _observation("mass-5.4", "mass", valueQuantity=_quantity(5.4, "mg")),
        _observation("mass-5.45", "mass", valueQuantity=_quantity(5.45, "mg")),
        _observation("mass-5350ug", "mass", valueQuantity=_quantity(5350, "ug")),
        _observation("temp-c", "8310-5", valueQuantity=_quantity(37, "Cel")),
        _observation("temp-f", "8310-5", valueQuantity=_quantity(98.6, "[degF]")),
        _observation("iu-l", "iu", valueQuantity=_quantity(3, "[IU]/L")),
        _observation("iu-ml", "iu", valueQuantity=_quantity(0.003, "[IU]/mL")),
        _observation(
            "covid",
            "94500-6",
            valueCodeableConcept={**_coded("260385009", SNOMED), "text": "Negative"},
        ),
        _observation("urine", "5767-9", valueString="Slightly cloudy"),
        _observation("dated", "dated", valueDateTime="2024-03-01T10:00:00Z"),
        # a value of its own and on a component: what `combo-*` unites, never cross-paired
        _observation(
            "mixed",
            "mixed",
            valueQuantity=_quantity(5, "mg"),
            subject={"reference": "Patient/p-2"},
            component=[
                {"code": _coded(SYSTOLIC), "valueQuantity": _quantity(110, "mm[Hg]")},
                {"code": _coded("8867-4"), "dataAbsentReason": _coded("not-performed", DAR)},
            ],
        ),
    ]


def patients() -> list[dict[str, Any]]:
    def identifier(kind: str, value: str) -> dict[str, Any]:
        return {"type": _coded(kind, V2_0203), "system": MRN, "value": value}

    return [
        {"resourceType": "Patient", "id": "p-1", "identifier": [identifier("MR", "12345")]},
        {"resourceType": "Patient", "id": "p-2", "identifier": [identifier("DL", "12345")]},
        {"resourceType": "Patient", "id": "p-3", "identifier": [identifier("MR", "99999")]},
        {"resourceType": "Patient", "id": "p-4", "identifier": [{"value": "12345"}]},
    ]


def _value_set(ident: str, **content: Any) -> dict[str, Any]:
    base = {"resourceType": "ValueSet", "id": ident, "url": f"{VS}/{ident}", "status": "active"}
    return base | content


def _include(*codes: str, system: str = LOINC) -> dict[str, Any]:
    return {"system": system, "concept": [{"code": code} for code in codes]}


def value_sets() -> list[dict[str, Any]]:
    return [
        _value_set("pressure", compose={"include": [_include(SYSTOLIC, DIASTOLIC, PANEL)]}),
        _value_set(
            "glucose",
            compose={
                "include": [
                    {
                        "system": LOINC,
                        "filter": [{"property": "concept", "op": "in", "value": "2339-0,15074-8"}],
                    }
                ]
            },
        ),
        _value_set(
            "both",
            compose={
                "include": [{"valueSet": [f"{VS}/pressure"]}, {"valueSet": [f"{VS}/glucose"]}],
                "exclude": [_include(PANEL)],
            },
        ),
        # intersection: the pressure codes that are also listed here
        _value_set(
            "systolic-only",
            compose={"include": [{**_include(SYSTOLIC, "other"), "valueSet": [f"{VS}/pressure"]}]},
        ),
        _value_set(
            "expanded",
            expansion={
                "timestamp": "2024-01-01T00:00:00Z",
                "contains": [
                    {
                        "system": LOINC,
                        "code": "grouper",
                        "abstract": True,
                        "contains": [{"system": SNOMED, "code": "260385009"}],
                    }
                ],
            },
        ),
        _value_set(
            "is-a",
            compose={
                "include": [
                    {
                        "system": SNOMED,
                        "filter": [{"property": "concept", "op": "is-a", "value": "1"}],
                    }
                ]
            },
        ),
        _value_set("all-loinc", compose={"include": [{"system": LOINC}]}),
        _value_set("loop", compose={"include": [{"valueSet": [f"{VS}/loop"]}]}),
        # the same url twice, told apart by version
        _value_set(
            "v1", url=f"{VS}/versioned", version="1", compose={"include": [_include(GLUCOSE)]}
        ),
        _value_set(
            "v2", url=f"{VS}/versioned", version="2", compose={"include": [_include(PANEL)]}
        ),
    ]


def terms_corpus() -> list[dict[str, Any]]:
    resources = [*observations(), *patients(), *value_sets()]
    for index, resource in enumerate(resources):
        instant = (START + timedelta(minutes=index)).isoformat().replace("+00:00", "Z")
        resource["meta"] = {"lastUpdated": instant}
    return resources
