"""UCUM units made comparable: a quantity's value in the base units of its dimension.

`canonical(code, value)` answers `(key, number)`: `6000 ug` and `6 mg` both become
`("[mass]", 6e-06)` (kilograms), `120 mm[Hg]` becomes pascals under `[length]-1.[mass].[time]-2`.
Two quantities are comparable exactly when their keys are equal; the key names the dimension,
never a unit, so `g/dL` and `mg/dL` compare, and `mg/dL` and `mmol/L` do not (that would need
a molar mass).

The unit codes are parsed by `ucumvert` (the full UCUM grammar, generated from the official
`ucum-essence.xml`) into `pint` quantities, whose registry carries the UCUM definitions.
What is refused (answered None, so the quantity only compares as written):
- codes the grammar does not accept, or longer than `MAX_UNIT_LENGTH`;
- arbitrary units (`[IU]`, `[arb'U]`, ...: UCUM says they compare with nothing but
  themselves, while pint would treat them as plain numbers);
- conversions that are not `scale * value + offset` (logarithmic units such as `[pH]`, `B`).
Annotations (`{beats}/min`) are ignored, as UCUM says.

Numbers are rounded to 12 significant digits after conversion: the factors come out as
binary floats (`g/dL` is 9.999999999999998 kg/m3), and without rounding `6 mg` and
`6000 ug` would differ in their last bit. The registry takes some 0.65 s to load: a started
Herald loads it up front (`load`, on a worker thread), so no write or search pays for it; it
loads on first use otherwise (tools, tests).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from defusedxml import ElementTree

UCUM_SYSTEM = "http://unitsofmeasure.org"
SIGNIFICANT_DIGITS = 12
# Longer codes compare as written only: real ones are short (`mL/min/{1.73_m2}` is 16), and
# parsing costs grow with length (a nested 500-character code takes a fifth of a second).
MAX_UNIT_LENGTH = 64
_LOCK = threading.Lock()
_BRACKETED = re.compile(r"\[[^\]]*\]")


@dataclass(frozen=True, slots=True)
class Conversion:
    """How values of one unit become values in base units: `scale * value + offset`."""

    key: str  # the dimension, e.g. `[length]-3.[mass]`; `1` for dimensionless
    scale: float
    offset: float

    def apply(self, value: float) -> float:
        return rounded(self.scale * value + self.offset)


def rounded(value: float) -> float:
    """`value` to `SIGNIFICANT_DIGITS` significant digits (what every converted value gets)."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


@cache
def _registry() -> Any:
    from ucumvert import PintUcumRegistry  # a second to load: only when a unit needs it

    return PintUcumRegistry()


def load() -> None:
    """Load the unit registry and the list of arbitrary units now (once per process; blocks:
    call it off the event loop)."""
    _arbitrary()
    with _LOCK:
        _registry()


def loaded() -> bool:
    """Whether the unit registry is loaded in this process."""
    return _registry.cache_info().currsize > 0


@cache
def _arbitrary() -> frozenset[str]:
    """The codes UCUM marks as arbitrary units (`isArbitrary="yes"`)."""
    essence = resources.files("ucumvert").joinpath("vendor/ucum-essence.xml").read_bytes()
    root = ElementTree.fromstring(essence)
    return frozenset(
        unit.get("Code", "")
        for unit in root.iter()
        if unit.tag.endswith("unit") and unit.get("isArbitrary") == "yes"
    )


def _dimension_key(dimensionality: Any) -> str:
    parts = sorted(dimensionality.items())
    key = ".".join(name if power == 1 else f"{name}{power:g}" for name, power in parts)
    return key or "1"


@lru_cache(maxsize=4096)
def conversion(code: str) -> Conversion | None:
    """The conversion of the UCUM unit `code` to base units; None when not comparable."""
    if len(code) > MAX_UNIT_LENGTH or any(
        atom in _arbitrary() for atom in _BRACKETED.findall(code)
    ):
        return None
    try:
        with _LOCK:  # pint's registry caches are not made for threads
            registry = _registry()
            unit = registry.from_ucum(code).units
            points = [registry.Quantity(x, unit).to_base_units() for x in (0.0, 1.0, 10.0)]
    except Exception:  # any code the grammar or pint refuses
        return None
    zero, one, ten = (float(point.magnitude) for point in points)
    scale, offset = one - zero, zero
    if scale <= 0 or not math.isclose(ten, offset + 10 * scale, rel_tol=1e-9):
        return None  # not affine (logarithmic units)
    return Conversion(_dimension_key(points[0].dimensionality), rounded(scale), rounded(offset))


def canonical(system: str | None, code: str | None, value: float) -> tuple[str, float] | None:
    """`(dimension key, value in base units)` of a UCUM quantity; None for anything else."""
    if system != UCUM_SYSTEM or not code:
        return None
    found = conversion(code)
    return None if found is None else (found.key, found.apply(value))


def range_in_base_units(
    system: str | None, code: str | None, low: float, high: float, *, exact: bool
) -> tuple[str, float, float] | None:
    """`(dimension key, low, high)` of a search range in base units; None when not UCUM.

    A range that is not `exact` ends just below its next value (`5.4` is [5.35, 5.45),
    stored as [5.35, nextafter(5.45, -inf)]); when rounding makes the converted end equal
    to that next value's, the end is stepped below it again, so `5.45 mg` stays outside.
    """
    if system != UCUM_SYSTEM or not code:
        return None
    found = conversion(code)
    if found is None:
        return None
    converted_high = found.apply(high)
    if not exact and converted_high == found.apply(math.nextafter(high, math.inf)):
        converted_high = math.nextafter(converted_high, -math.inf)
    return found.key, found.apply(low), converted_high
