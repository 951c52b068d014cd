"""UCUM units in base units: what compares, what does not."""

from __future__ import annotations

import math

import pytest

from fhirstore.search.ucum import MAX_UNIT_LENGTH, UCUM_SYSTEM, canonical, range_in_base_units


def test_the_same_amount_in_different_units_is_the_same_number() -> None:
    assert canonical(UCUM_SYSTEM, "mg", 6) == canonical(UCUM_SYSTEM, "ug", 6000)
    assert canonical(UCUM_SYSTEM, "g/dL", 0.1) == canonical(UCUM_SYSTEM, "mg/dL", 100)
    assert canonical(UCUM_SYSTEM, "Cel", 37) == canonical(UCUM_SYSTEM, "[degF]", 98.6)
    assert canonical(UCUM_SYSTEM, "{beats}/min", 60) == canonical(UCUM_SYSTEM, "/min", 60)


def test_different_dimensions_never_compare() -> None:
    mass = canonical(UCUM_SYSTEM, "mg/dL", 1)
    substance = canonical(UCUM_SYSTEM, "mmol/L", 1)
    assert mass is not None and substance is not None and mass[0] != substance[0]


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (UCUM_SYSTEM, "[IU]/L"),  # arbitrary: comparable with nothing else
        (UCUM_SYSTEM, "[pH]"),  # logarithmic
        (UCUM_SYSTEM, "not a unit"),
        (UCUM_SYSTEM, "m." * (MAX_UNIT_LENGTH // 2) + "m"),  # too long to parse
        ("http://example.org/units", "mg"),
        (None, "mg"),
        (UCUM_SYSTEM, None),
    ],
)
def test_what_compares_only_as_written(system: str | None, code: str | None) -> None:
    assert canonical(system, code, 1) is None


def test_an_implied_range_keeps_its_open_end_in_base_units() -> None:
    # 5.4 mg is [5.35, 5.45) mg: 5350 ug is inside, 5.45 mg is not
    found = range_in_base_units(UCUM_SYSTEM, "mg", 5.35, math.nextafter(5.45, 0), exact=False)
    assert found is not None
    _, low, high = found
    inside = canonical(UCUM_SYSTEM, "ug", 5350)
    outside = canonical(UCUM_SYSTEM, "mg", 5.45)
    assert inside is not None and outside is not None
    assert low <= inside[1] <= high < outside[1]
